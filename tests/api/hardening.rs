//! Issue 13, part 6: inbound hardening found by an outside fuzzing run.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wipehook_sim::SimOptions;

use crate::both_stores;
use crate::helpers::{StoreKind, spawn_app, spawn_with};

const INC: &str = "/api/v1/sentinel/incidents";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_in_an_incident_id_are_refused() {
    let app = spawn_app().await;
    for name in [".", "..", "..."] {
        let mut body = app
            .h
            .incident_body("inc-dot", 1401, "High", &["alex@contoso.com"]);
        let id = app
            .incident_id("inc-dot")
            .replace("/Incidents/inc-dot", &format!("/Incidents/{name}"));
        body["object"]["id"] = json!(id);
        body["object"]["name"] = json!(name);
        let r = app.post_incident(&body).await;
        assert_eq!(r.status().as_u16(), 422, "{name}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_incident_id");
        // The same id as an entity trigger's IncidentArmID.
        let entity = json!({
            "Entity": {"Name": "alex", "UPNSuffix": "contoso.com", "Type": "account"},
            "IncidentArmID": id,
        });
        let r = app.post_incident(&entity).await;
        assert_eq!(r.status().as_u16(), 422, "entity {name}");
    }
    app.drain().await;
    assert!(app.h.sim.arm_calls().is_empty(), "no ARM call was made");
    assert!(app.clears().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_string_incident_arm_id_is_refused() {
    let app = spawn_app().await;
    for v in [json!(42), json!(true), json!({"id": "x"}), json!(["x"])] {
        let entity = json!({
            "Entity": {"Name": "alex", "UPNSuffix": "contoso.com", "Type": "account"},
            "IncidentArmID": v,
        });
        let r = app.post_incident(&entity).await;
        assert_eq!(r.status().as_u16(), 422, "{v}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_incident_id", "{v}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be a string")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let body = app
        .h
        .incident_body("inc-case", 1402, "High", &["nobody@contoso.com"]);
    for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
        let r = app
            .client
            .post(format!("{}{INC}", app.base))
            .header("authorization", format!("{scheme} {}", app.h.run_token()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{scheme}");
    }
    let r = app
        .client
        .post(format!("{}{INC}", app.base))
        .header("authorization", format!("Basic {}", app.h.run_token()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_healthz_answers_200() {
    let app = spawn_app().await;
    let r = app
        .client
        .head(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn nul(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let mut body = app
        .h
        .incident_body("inc-nul", 1403, "High", &["alex@contoso.com"]);
    body["object"]["properties"]["title"] = json!("phish\u{0}ing");
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "nul_character");
    let mut body = app
        .h
        .incident_body("inc-nul", 1403, "High", &["alex@contoso.com"]);
    body["object"]["properties"]["relatedEntities"][0]["properties"]["accountName"] =
        json!("al\u{0}ex");
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        app.running()
            .shared
            .store
            .runs_for_incident(
                &wipehook::domain::IncidentRef::parse(&app.incident_id("inc-nul")).unwrap()
            )
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
}
both_stores!(a_nul_character_is_refused_on_both_stores, nul);

/// Send the headers and the first bytes of a body of `len`, then trickle.
async fn trickle(base: &str, token: &str, len: usize) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {INC} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; 70 * 1024]).await.unwrap();
    s
}

async fn status_of(mut s: tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out_and_large_bodies_take_turns() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.server.body_read_timeout = Duration::from_millis(800);
        s.server.max_large_bodies = 1;
    })
    .await
    else {
        return;
    };
    let token = app.h.run_token();
    // A large body that never completes holds the one large-body turn...
    let first = trickle(&app.base, &token, 1024 * 1024).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...a second large body waits for it, and both time out (408)...
    let second = trickle(&app.base, &token, 1024 * 1024).await;
    // ...while a small body is read at once.
    let body = app
        .h
        .incident_body("inc-small", 1404, "High", &["nobody@contoso.com"]);
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 202);
    assert!(status_of(first).await.contains("408"));
    assert!(status_of(second).await.contains("408"));
    // The turn is free again.
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 202);
}
