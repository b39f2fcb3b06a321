//! Point 3 of the pipeline issue: every way a call is refused, and that a
//! refused call stores nothing.

use serde_json::{Value, json};
use wipehook::harness::{AUDIENCE, PLAYBOOK_OID};

use crate::helpers::*;

fn claims(app: &TestApp) -> Value {
    let tid = app.h.sim.tenant_id();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"aud": AUDIENCE, "iss": format!("https://sts.windows.net/{tid}/"), "tid": tid, "oid": PLAYBOOK_OID,
           "roles": ["Containment.Run"], "iat": now - 5, "nbf": now - 5, "exp": now + 3600, "ver": "1.0"})
}

async fn expect_401(app: &TestApp, token: Option<&str>, why: &str) {
    let body = app.h.incident_body("a1", 1, "High", &["jdoe@contoso.com"]);
    let r = app.post("/api/v1/sentinel/incidents", token, &body).await;
    assert_eq!(r.status().as_u16(), 401, "{why}");
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        www.starts_with("Bearer error=\"invalid_token\""),
        "{why}: {www}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_token", "{why}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    expect_401(&app, None, "no token").await;
    expect_401(&app, Some("not.a.jwt"), "garbage").await;
    let mut c = claims(&app);
    c["aud"] = json!("api://someone-else");
    expect_401(&app, Some(&sim.sign_token(c)), "wrong audience").await;
    let mut c = claims(&app);
    c["iss"] = json!("https://evil.example/");
    expect_401(&app, Some(&sim.sign_token(c)), "wrong issuer").await;
    let mut c = claims(&app);
    c["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 600);
    expect_401(&app, Some(&sim.sign_token(c)), "expired").await;
    let mut c = claims(&app);
    c["nbf"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + 600);
    expect_401(&app, Some(&sim.sign_token(c)), "not yet valid").await;
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("nbf");
    expect_401(&app, Some(&sim.sign_token(c)), "no nbf").await;
    let mut c = claims(&app);
    c["oid"] = json!("99999999-9999-4999-8999-999999999999");
    expect_401(&app, Some(&sim.sign_token(c)), "caller not allowed").await;
    let mut c = claims(&app);
    c["roles"] = json!(["Something.Else"]);
    expect_401(&app, Some(&sim.sign_token(c)), "missing role").await;
    let mut c = claims(&app);
    c["tid"] = json!("12345678-1234-4234-8234-123456789012");
    expect_401(&app, Some(&sim.sign_token(c)), "unconfigured tenant").await;
    expect_401(
        &app,
        Some(&sim.sign_token_with_unknown_key(claims(&app))),
        "unknown signing key",
    )
    .await;
    // alg "none" and HS256 signed with the public key.
    let b64 = |v: &Value| {
        use std::fmt::Write;
        let s = serde_json::to_vec(v).unwrap();
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.chunks(3) {
            let n = chunk.iter().fold(0u32, |a, b| (a << 8) | *b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    table[((n >> (18 - 6 * i)) & 63) as usize] as char
                );
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(&app))
    );
    expect_401(&app, Some(&none), "alg none").await;
    let hs = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": "x"})),
        b64(&claims(&app))
    );
    expect_401(&app, Some(&hs), "HS256").await;

    // The good token works, and none of the refused calls left a run behind.
    let ok = app
        .post_incident(&app.h.incident_body("a2", 2, "High", &["jdoe@contoso.com"]))
        .await;
    assert_eq!(ok.status().as_u16(), 202);
    let runs = app.running().shared.store.list_runs(100).await.unwrap();
    assert_eq!(runs.len(), 1, "only the authenticated call became a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_json_errors_and_store_nothing() {
    let app = spawn_with(
        wipehook_sim::SimOptions::default(),
        StoreKind::Sqlite,
        |s| s.server.body_limit_bytes = 64 * 1024,
    )
    .await
    .unwrap();
    let token = app.h.run_token();
    let raw = |body: &'static str| {
        let client = app.client.clone();
        let url = format!("{}/api/v1/sentinel/incidents", app.base);
        let token = token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = raw("{not json").await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );

    let cases = [
        (json!({"hello": "world"}), 422, "unknown_shape"),
        (
            json!({"SystemAlertId": "x", "Entities": []}),
            422,
            "alert_trigger_unsupported",
        ),
        (
            json!({"object": {"properties": {"relatedEntities": []}}}),
            422,
            "no_incident_id",
        ),
        (
            json!({"object": {"id": "/subscriptions/x/y"}}),
            422,
            "invalid_incident_id",
        ),
        (
            json!({"object": {"id": "/subscriptions/other/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/i"}}),
            403,
            "workspace_not_allowed",
        ),
    ];
    for (body, status, code) in cases {
        let r = app.post_incident(&body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
    }
    let big = json!({"object": {"id": app.incident_id("big"), "properties": {"description": "x".repeat(70 * 1024)}}});
    let r = app.post_incident(&big).await;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );
    assert!(
        app.running()
            .shared
            .store
            .list_runs(100)
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    // Unknown routes answer JSON too.
    let r = app
        .client
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.json::<Value>().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unavailable_fails_closed_and_unknown_kid_refreshes_once_a_minute() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.set_oidc_available(false);
    let body = app.h.incident_body("k1", 1, "High", &["jdoe@contoso.com"]);
    let r = app.post_incident(&body).await;
    assert_eq!(
        r.status().as_u16(),
        503,
        "fail closed while keys cannot be fetched"
    );
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(
        app.running()
            .shared
            .store
            .list_runs(10)
            .await
            .unwrap()
            .is_empty()
    );

    // A fresh app: keys fetched once, then a rotated key is picked up on
    // its unknown kid, and unknown kids do not refetch more often than
    // inbound.key_refresh_interval (60 s by default; 300 ms here).
    let app = spawn_with(
        wipehook_sim::SimOptions::default(),
        StoreKind::Sqlite,
        |s| s.inbound.key_refresh_interval = std::time::Duration::from_millis(300),
    )
    .await
    .unwrap();
    let sim = &app.h.sim;
    assert_eq!(
        app.post_incident(&app.h.incident_body("k2", 2, "High", &[]))
            .await
            .status()
            .as_u16(),
        202
    );
    let fetches = sim.oidc_fetch_count();
    sim.rotate_signing_key();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        app.post_incident(&app.h.incident_body("k3", 3, "High", &[]))
            .await
            .status()
            .as_u16(),
        202,
        "rotated key accepted after one refresh"
    );
    assert!(sim.oidc_fetch_count() > fetches);
    let after = sim.oidc_fetch_count();
    for _ in 0..3 {
        let t = sim.sign_token_with_unknown_key(claims(&app));
        assert_eq!(
            app.post("/api/v1/sentinel/incidents", Some(&t), &body)
                .await
                .status()
                .as_u16(),
            401
        );
    }
    assert_eq!(
        sim.oidc_fetch_count(),
        after,
        "no refetch within a minute of the last one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_needs_the_same_authentication() {
    let app = spawn_app().await;
    let r = app
        .post_incident(&app.h.incident_body("s1", 1, "High", &[]))
        .await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = app.client.get(&location).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = app
        .client
        .get(format!(
            "{}/api/v1/runs/00000000-0000-4000-8000-000000000000",
            app.base
        ))
        .bearer_auth(app.h.run_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "run_not_found"
    );
}
