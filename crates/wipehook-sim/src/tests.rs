//! Drives the simulated tenant over real HTTP(S) with reqwest.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const VICTIM: &str = "victim@contoso.com";

async fn sim() -> SimTenant {
    SimTenant::start(SimOptions::default())
        .await
        .expect("sim starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn token_req(sim: &SimTenant, tenant: &str, secret: &str, scope: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", sim.http_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &sim.client_id()),
            ("client_secret", secret),
            ("scope", scope),
        ]))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

async fn token(sim: &SimTenant, scope: &str) -> String {
    let (s, v) = token_req(sim, &sim.tenant_id(), &sim.client_secret(), scope).await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

async fn exo_token(sim: &SimTenant) -> String {
    token(sim, "https://outlook.office365.com/.default").await
}

fn exo_url(sim: &SimTenant) -> String {
    format!(
        "{}/adminapi/beta/{}/InvokeCommand",
        sim.http_url(),
        sim.tenant_id()
    )
}

fn cmd(name: &str, params: Value) -> Value {
    json!({"CmdletInput": {"CmdletName": name, "Parameters": params}})
}

async fn exo(sim: &SimTenant, tok: &str, body: &Value) -> (u16, Value) {
    exo_at(&exo_url(sim), tok, body, None).await
}

async fn exo_at(url: &str, tok: &str, body: &Value, page: Option<usize>) -> (u16, Value) {
    let mut rb = client()
        .post(url)
        .bearer_auth(tok)
        .header("X-ResponseFormat", "json")
        .header("X-AnchorMailbox", format!("UPN:{VICTIM}"))
        .json(body);
    if let Some(n) = page {
        rb = rb.header("Prefer", format!("odata.maxpagesize={n}"));
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn detail(v: &Value) -> String {
    v["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn claims_of(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(jwt)
        .unwrap()
        .claims
}

#[tokio::test]
async fn token_endpoint_good_bad_secret_bad_scope_unknown_tenant() {
    let sim = sim().await;
    let tid = sim.tenant_id();
    let (s, v) = token_req(
        &sim,
        &tid,
        &sim.client_secret(),
        "https://outlook.office365.com/.default",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["ext_expires_in"], 3599);
    let c = claims_of(v["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://outlook.office365.com");
    assert_eq!(c["tid"], tid.as_str());
    assert_eq!(c["roles"], json!(["Exchange.ManageAsApp"]));
    assert_eq!(c["appid"], sim.client_id().as_str());
    assert!(c["oid"].is_string());

    // trailing-slash resource form is accepted too
    let (s, _) = token_req(
        &sim,
        &tid,
        &sim.client_secret(),
        "https://management.azure.com//.default",
    )
    .await;
    assert_eq!(s, 200);

    let (s, v) = token_req(&sim, &tid, "wrong", "https://graph.microsoft.com/.default").await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"], json!([7000215]));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );

    let (s, v) = token_req(
        &sim,
        &tid,
        &sim.client_secret(),
        "https://127.0.0.1:1234/.default",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_resource");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS500011")
    );

    let (s, v) = token_req(
        &sim,
        "11111111-2222-3333-4444-555555555555",
        &sim.client_secret(),
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error_codes"], json!([90002]));

    let reqs = sim.token_requests();
    assert_eq!(reqs.len(), 5);
    assert_eq!(
        reqs[0].scope_or_resource,
        "https://outlook.office365.com/.default"
    );
    assert_eq!(reqs[0].kind, "client_credentials");
    assert_eq!(reqs[0].client_id, sim.client_id());
}

#[tokio::test]
async fn managed_identity_app_service_endpoint() {
    let sim = sim().await;
    let url = sim.managed_identity_endpoint();
    let r = client()
        .get(&url)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://outlook.office365.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = client()
        .get(&url)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://management.azure.com/"),
            ("client_id", "uami-client"),
        ])
        .header("x-identity-header", sim.managed_identity_header())
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(v["resource"], "https://management.azure.com/");
    assert_eq!(v["token_type"], "Bearer");
    let c = claims_of(v["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://management.azure.com");
    assert_eq!(c["appid"], "uami-client");

    let r = client()
        .get(&url)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "api://something-else"),
        ])
        .header("x-identity-header", sim.managed_identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let reqs = sim.token_requests();
    assert_eq!(reqs[1].kind, "managed_identity");
    assert_eq!(reqs[1].client_id, "uami-client");
    assert_eq!(reqs[1].scope_or_resource, "https://management.azure.com/");
}

#[tokio::test]
async fn oidc_jwks_and_playbook_token_verifies() {
    let sim = sim().await;
    let tid = sim.tenant_id();
    let base = sim.http_url();
    let v1: Value = client()
        .get(format!("{base}/{tid}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(v1["jwks_uri"], format!("{base}/{tid}/discovery/v2.0/keys"));
    let v2: Value = client()
        .get(format!(
            "{base}/{tid}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["issuer"], format!("{base}/{tid}/v2.0"));

    let fetch = || async {
        client()
            .get(format!("{base}/{tid}/discovery/v2.0/keys"))
            .send()
            .await
            .unwrap()
    };
    let jwks: Value = fetch().await.json().await.unwrap();
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert!(k.get("alg").is_none());
    assert_eq!(k["kid"], k["x5t"]);
    assert_eq!(k["e"], "AQAB");
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(sim.oidc_fetch_count(), 1);

    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let oid = "0f0e0d0c-0b0a-4909-8807-060504030201";
    let tok = sim.playbook_token("api://wipehook", oid, &["Wipe.Execute"]);
    let header = jsonwebtoken::decode_header(&tok).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    val.set_audience(&["api://wipehook"]);
    val.set_issuer(&[format!("https://sts.windows.net/{tid}/")]);
    val.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
    val.validate_nbf = true;
    let c = jsonwebtoken::decode::<Value>(
        &tok,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &val,
    )
    .unwrap()
    .claims;
    assert_eq!(c["oid"], oid);
    assert_eq!(c["tid"], tid.as_str());
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["roles"], json!(["Wipe.Execute"]));

    // unknown key: kid not published
    let bad = sim.sign_token_with_unknown_key(json!({"aud": "x"}));
    let bad_kid = jsonwebtoken::decode_header(&bad).unwrap().kid.unwrap();
    assert!(set.find(&bad_kid).is_none());

    // rotation publishes a second key and signs with it
    sim.rotate_signing_key();
    let jwks2: jsonwebtoken::jwk::JwkSet = fetch().await.json().await.unwrap();
    assert_eq!(jwks2.keys.len(), 2);
    let rotated = sim.playbook_token("api://wipehook", oid, &[]);
    let kid2 = jsonwebtoken::decode_header(&rotated).unwrap().kid.unwrap();
    assert!(set.find(&kid2).is_none());
    assert!(jwks2.find(&kid2).is_some());
    assert!(claims_of(&rotated).get("roles").is_none());

    sim.set_oidc_available(false);
    assert_eq!(fetch().await.status().as_u16(), 503);
    let r = client()
        .get(format!(
            "{base}/{tid}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(sim.oidc_fetch_count(), 3);
    sim.set_oidc_available(true);
    assert_eq!(fetch().await.status().as_u16(), 200);
}

#[tokio::test]
async fn exchange_requires_exchange_audience() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let body = cmd("Get-MobileDevice", json!({"Mailbox": VICTIM}));
    let arm = token(&sim, "https://management.azure.com/.default").await;
    let r = client()
        .post(exo_url(&sim))
        .bearer_auth(&arm)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = client()
        .post(exo_url(&sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // a token the sim did not sign
    let forged = sim.sign_token_with_unknown_key(json!({"aud": "https://outlook.office365.com", "exp": 4_000_000_000u64, "tid": sim.tenant_id()}));
    let (s, _) = exo(&sim, &forged, &body).await;
    assert_eq!(s, 401);
    let (s, _) = exo(&sim, &exo_token(&sim).await, &body).await;
    assert_eq!(s, 200);
    let calls = sim.exchange_calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].response_status, 401);
    assert_eq!(calls[3].response_status, 200);
    assert_eq!(calls[3].cmdlet, "Get-MobileDevice");
    assert_eq!(
        calls[3].anchor_mailbox.as_deref(),
        Some("UPN:victim@contoso.com")
    );
}

#[tokio::test]
async fn get_mobile_device_by_mailbox_vs_everything() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    sim.add_user(
        "bystander@contoso.com",
        "11111111-0000-4000-8000-000000000002",
    );
    let g1 = sim.add_device(VICTIM, DeviceSpec::iphone());
    let g2 = sim.add_device(VICTIM, DeviceSpec::outlook());
    sim.add_device("bystander@contoso.com", DeviceSpec::android_native_eas());
    let tok = exo_token(&sim).await;

    let (s, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-MobileDevice",
            json!({"Mailbox": VICTIM, "ResultSize": "Unlimited"}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let list = v["value"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["Guid"], g1.as_str());
    assert_eq!(list[1]["Guid"], g2.as_str());
    assert_eq!(list[0]["Guid@odata.type"], "#Guid");
    assert_eq!(list[0]["DeviceType"], "iPhone");
    assert_eq!(list[0]["ClientType"], "EAS");
    assert_eq!(list[0]["DeviceActiveSyncVersion"], "16.1");
    assert_eq!(list[0]["DeviceAccessState"], "Allowed");
    assert_eq!(list[0]["FriendlyName"], "");
    let identity = list[0]["Identity"].as_str().unwrap();
    assert!(
        identity.starts_with("victim\\ExchangeActiveSyncDevices\\iPhone§"),
        "{identity}"
    );
    let fst = list[0]["FirstSyncTime"].as_str().unwrap();
    assert_eq!(
        fst.len(),
        "2025-01-05T10:00:00.0000000+00:00".len(),
        "{fst}"
    );
    assert!(v["@odata.context"].is_string());
    assert_eq!(v["@adminapi.warnings"], json!([]));

    // The danger: no Mailbox and a null/missing/unknown Identity returns EVERY device.
    for params in [
        json!({}),
        json!({"Identity": null}),
        json!({"Identity": "nobody@contoso.com"}),
    ] {
        let (s, v) = exo(&sim, &tok, &cmd("Get-MobileDevice", params)).await;
        assert_eq!(s, 200);
        assert_eq!(v["value"].as_array().unwrap().len(), 3);
    }
    // A known Identity returns just that device.
    let (_, v) = exo(
        &sim,
        &tok,
        &cmd("Get-MobileDevice", json!({"Identity": g2})),
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);

    // Unknown mailbox -> 404 envelope
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd("Get-MobileDevice", json!({"Mailbox": "ghost@contoso.com"})),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "NotFound");
    assert!(detail(&v).contains("ManagementObjectNotFoundException"));
    assert_eq!(detail(&v).split('|').count(), 3);

    // Mailbox by Entra object id
    let (_, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-MobileDevice",
            json!({"Mailbox": "11111111-0000-4000-8000-000000000002"}),
        ),
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);

    // Unknown cmdlet (e.g. missing RBAC)
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd("Remove-MobileDevice", json!({"Identity": g1})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        detail(&v)
            .contains("The term 'Remove-MobileDevice' is not recognized as a name of a cmdlet")
    );
}

#[tokio::test]
async fn get_mobile_device_paging_and_result_size() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    for _ in 0..5 {
        sim.add_device(VICTIM, DeviceSpec::iphone());
    }
    let tok = exo_token(&sim).await;
    let body = cmd(
        "Get-MobileDevice",
        json!({"Mailbox": VICTIM, "ResultSize": "Unlimited"}),
    );
    let mut url = exo_url(&sim);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (s, v) = exo_at(&url, &tok, &body, Some(2)).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        for d in v["value"].as_array().unwrap() {
            seen.push(d["Guid"].as_str().unwrap().to_string());
        }
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&sim.http_url()));
                assert!(next.contains("$skiptoken="));
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.dedup();
    assert_eq!(seen.len(), 5);

    let (_, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-MobileDevice",
            json!({"Mailbox": VICTIM, "ResultSize": 3}),
        ),
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    assert!(v.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn clear_mobile_device_variants() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let phone = sim.add_device(VICTIM, DeviceSpec::iphone());
    let android = sim.add_device(VICTIM, DeviceSpec::android_native_eas());
    let old = sim.add_device(VICTIM, DeviceSpec::old_eas());
    let outlook = sim.add_device(VICTIM, DeviceSpec::outlook());
    let tok = exo_token(&sim).await;
    let clear = |p: Value| cmd("Clear-MobileDevice", p);

    // Confirm missing: validation only, nothing executed.
    let (s, v) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": phone, "AccountOnly": true})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["@adminapi.confirmationmessage"].is_string());
    assert_eq!(sim.device(&phone).unwrap().wipe_request_count, 0);

    // Account-only wipe.
    let (s, v) = exo(&sim, &tok, &clear(json!({"Identity": phone, "AccountOnly": true, "Confirm": false, "NotificationEmailAddresses": ["soc@contoso.com"]}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"], json!([]));
    let d = sim.device(&phone).unwrap();
    assert!(d.account_only && !d.full_wipe_requested);
    assert_eq!(d.wipe_request_count, 1);
    assert!(d.wipe_requested_at.is_some() && d.wipe_acked_at.is_none());
    assert_eq!(
        d.notification_email_addresses,
        vec!["soc@contoso.com".to_string()]
    );

    // By Identity string works too; repeat re-stamps.
    let (s, _) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": d.identity, "AccountOnly": true, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(sim.device(&phone).unwrap().wipe_request_count, 2);

    // Without AccountOnly: a FULL wipe is recorded (the danger).
    let (s, _) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": android, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(sim.device(&android).unwrap().full_wipe_requested);
    let (s, _) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": outlook, "AccountOnly": false, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(sim.device(&outlook).unwrap().full_wipe_requested);

    // Old EAS: account-only not supported.
    let (s, v) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": old, "AccountOnly": true, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(detail(&v).contains("DeviceDoesNotSupportAccountOnlyWipeException"));
    assert!(detail(&v).contains("account-only remote wipe"));
    let d = sim.device(&old).unwrap();
    assert_eq!(d.wipe_request_count, 0);
    assert!(!d.full_wipe_requested);

    // Cancel a pending wipe, then cancel with nothing pending -> warning.
    let (s, _) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": phone, "Cancel": true, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 200);
    let d = sim.device(&phone).unwrap();
    assert_eq!(d.cancel_count, 1);
    assert!(d.wipe_requested_at.is_none());
    let (s, v) = exo(
        &sim,
        &tok,
        &clear(json!({"Identity": phone, "Cancel": true, "Confirm": false})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v["@adminapi.warnings"][0]
            .as_str()
            .unwrap()
            .contains("CannotCancelWipe")
    );
    assert_eq!(sim.device(&phone).unwrap().cancel_count, 1);

    // Unknown device.
    let (s, v) = exo(&sim, &tok, &clear(json!({"Identity": "00000000-0000-0000-0000-000000000000", "AccountOnly": true, "Confirm": false}))).await;
    assert_eq!(s, 404);
    assert!(detail(&v).contains("ManagementObjectNotFoundException"));
}

#[tokio::test]
async fn statistics_follow_the_wipe_lifecycle() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let phone = sim.add_device(VICTIM, DeviceSpec::iphone());
    let tok = exo_token(&sim).await;
    let stats = || cmd("Get-MobileDeviceStatistics", json!({"Mailbox": VICTIM}));

    let (s, v) = exo(&sim, &tok, &stats()).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"][0]["Status"], "DeviceOk");
    assert!(v["value"][0]["AccountOnlyDeviceWipeRequestTime"].is_null());
    assert_eq!(v["value"][0]["IsRemoteWipeSupported"], true);

    exo(
        &sim,
        &tok,
        &cmd(
            "Clear-MobileDevice",
            json!({"Identity": phone, "AccountOnly": true, "Confirm": false}),
        ),
    )
    .await;
    let (_, v) = exo(&sim, &tok, &stats()).await;
    let d = &v["value"][0];
    assert_eq!(d["Status"], "AccountOnlyDeviceWipePending");
    assert!(d["AccountOnlyDeviceWipeRequestTime"].is_string());
    assert!(d["AccountOnlyDeviceWipeAckTime"].is_null());
    assert!(d["DeviceWipeRequestTime"].is_null());

    sim.sync_device(&phone);
    let (_, v) = exo(
        &sim,
        &tok,
        &cmd("Get-MobileDeviceStatistics", json!({"Identity": phone})),
    )
    .await;
    let d = &v["value"][0];
    assert_eq!(d["Status"], "AccountOnlyDeviceWipeSucceeded");
    assert!(d["AccountOnlyDeviceWipeSentTime"].is_string());
    assert!(d["AccountOnlyDeviceWipeAckTime"].is_string());
    assert!(sim.device(&phone).unwrap().wipe_acked_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_throttles() {
    let sim = SimTenant::start(SimOptions {
        exchange_concurrency_cap: Some(1),
        latency: Duration::from_millis(400),
        ..Default::default()
    })
    .await
    .unwrap();
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let tok = exo_token(&sim).await;
    let url = exo_url(&sim);
    let body = cmd("Get-MobileDevice", json!({"Mailbox": VICTIM}));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (url, tok, body) = (url.clone(), tok.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let ra = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (s, ra, r.text().await.unwrap())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ok = 0;
    let mut t429 = 0;
    let mut msg = 0;
    for t in tasks {
        let (s, ra, text) = t.await.unwrap();
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(ra.as_deref(), Some(exchange::CAP_RETRY_AFTER));
                t429 += 1
            }
            400 => {
                assert!(text.starts_with(exchange::CONCURRENCY_MESSAGE));
                msg += 1
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(t429 + msg, 4);
    assert!(t429 >= 1 && msg >= 1);
    assert_eq!(sim.throttled_count(), 4);
    assert_eq!(sim.exchange_calls().len(), 5);
}

/// A hosted tenant: tokens in it, its own Exchange cap (a full tenant does
/// not throttle the other), its own workspace; a token of one tenant does
/// not open the other's Exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_tenants_have_their_own_cap_tokens_and_workspace() {
    let sim = SimTenant::start(SimOptions {
        exchange_concurrency_cap: Some(1),
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let other = "0b0b0b0b-1111-4222-8333-444444444444";
    let ws = sim.host_tenant(other, "soc-ws-b", Some(1));
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let own_tok = exo_token(&sim).await;
    let (s, v) = token_req(
        &sim,
        other,
        &sim.client_secret(),
        "https://outlook.office365.com/.default",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let other_tok = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&other_tok)["tid"], other);
    let other_url = format!("{}/adminapi/beta/{other}/InvokeCommand", sim.http_url());
    let body = cmd("Get-MobileDevice", json!({"Mailbox": VICTIM}));
    // One call in flight in each tenant at once: both answered (caps are per tenant).
    let a = {
        let (url, tok, body) = (exo_url(&sim), own_tok.clone(), body.clone());
        tokio::spawn(async move { exo_at(&url, &tok, &body, None).await.0 })
    };
    let b = {
        let (url, tok, body) = (other_url.clone(), other_tok.clone(), body.clone());
        tokio::spawn(async move { exo_at(&url, &tok, &body, None).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A second call in the hosted tenant while its one place is taken: throttled.
    let (s3, _) = exo_at(&other_url, &other_tok, &body, None).await;
    assert!(s3 == 429 || s3 == 400, "{s3}");
    assert_eq!(a.await.unwrap(), 200);
    assert_eq!(b.await.unwrap(), 200);
    assert_eq!(sim.throttled_count(), 1);
    // A token of one tenant for the other's URL: refused.
    assert_eq!(exo_at(&other_url, &own_tok, &body, None).await.0, 401);
    // The hosted workspace answers ARM for its incidents.
    sim.add_incident("b-1", json!([]));
    let arm = token(&sim, "https://management.azure.com/.default").await;
    let r = client()
        .post(format!(
            "{}{}/entities?api-version=2024-03-01",
            sim.http_url(),
            sim.incident_arm_id_in(&ws, "b-1")
        ))
        .bearer_auth(&arm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn injected_exchange_faults() {
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let tok = exo_token(&sim).await;
    let body = cmd("Get-MobileDevice", json!({"Mailbox": VICTIM}));
    sim.fail_next_exchange(
        1,
        Fault::Throttle429 {
            retry_after_secs: 0.5,
        },
    );
    sim.fail_next_exchange(1, Fault::ConcurrencyMessage);
    sim.fail_next_exchange(2, Fault::Status(503));
    sim.fail_next_exchange(1, Fault::Unauthorized401);

    let r = client()
        .post(exo_url(&sim))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "0.5");
    assert!(r.headers().contains_key("rate-limit-remaining"));
    let (s, v) = exo(&sim, &tok, &body).await;
    assert_eq!(s, 400);
    assert!(
        v.as_str()
            .unwrap()
            .starts_with(exchange::CONCURRENCY_MESSAGE)
    );
    let (s, v) = exo(&sim, &tok, &body).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "ServiceUnavailable");
    let (s, _) = exo(&sim, &tok, &body).await;
    assert_eq!(s, 503);
    let (s, _) = exo(&sim, &tok, &body).await;
    assert_eq!(s, 401);
    let (s, _) = exo(&sim, &tok, &body).await;
    assert_eq!(s, 200);
    let st: Vec<u16> = sim
        .exchange_calls()
        .iter()
        .map(|c| c.response_status)
        .collect();
    assert_eq!(st, vec![429, 400, 503, 503, 401, 200]);
    assert_eq!(sim.throttled_count(), 2);
}

#[tokio::test]
async fn comments_create_update_and_limits() {
    let sim = sim().await;
    let tok = token(&sim, "https://management.azure.com/.default").await;
    let inc = sim.incident_arm_id("73e01a99-5cd7-4139-a149-9f2736ff2ab5");
    // lower-case `incidents` segment, as Logic Apps and the REST docs write it
    let lower = inc.replace("/Incidents/", "/incidents/");
    let put = |url: String, msg: String| {
        let tok = tok.clone();
        async move {
            let r = client()
                .put(url)
                .bearer_auth(tok)
                .json(&json!({"properties": {"message": msg}}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let id = "4bb36b7b-26ff-4d1c-9cbe-0d8ab3da0014";
    let url = format!(
        "{}{lower}/comments/{id}?api-version=2025-09-01",
        sim.http_url()
    );
    let (s, v) = put(url.clone(), "<p>first</p>".into()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], id);
    assert_eq!(v["properties"]["message"], "<p>first</p>");
    assert!(v["properties"]["createdTimeUtc"].is_string());
    let (s, v) = put(url.clone(), "<p>second</p>".into()).await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["message"], "<p>second</p>");

    let cs = sim.comments(&inc);
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].message, "<p>second</p>");
    assert_eq!(cs[0].puts, 2);
    assert_eq!(sim.comments(&lower).len(), 1);

    let (s, v) = put(url.clone(), "x".repeat(30_001)).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("exceeds"));
    let (s, _) = put(url.clone(), "é".repeat(30_000)).await;
    assert_eq!(s, 200, "30,000 characters (not bytes) are allowed");

    for i in 1..100 {
        let u = format!(
            "{}{inc}/comments/c-{i}?api-version=2025-09-01",
            sim.http_url()
        );
        let (s, _) = put(u, format!("m{i}")).await;
        assert_eq!(s, 201);
    }
    let u = format!(
        "{}{inc}/comments/c-101?api-version=2025-09-01",
        sim.http_url()
    );
    let (s, v) = put(u, "one too many".into()).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(sim.comments(&inc).len(), 100);
    assert_eq!(sim.comment_puts(), 2 + 2 + 99 + 1);

    let r = client()
        .get(format!(
            "{}{inc}/comments?api-version=2025-09-01",
            sim.http_url()
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 100);

    // no api-version / wrong audience / injected failure
    let r = client()
        .put(format!("{}{inc}/comments/x", sim.http_url()))
        .bearer_auth(&tok)
        .json(&json!({"properties":{"message":"m"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let exo = exo_token(&sim).await;
    let r = client()
        .put(&url)
        .bearer_auth(&exo)
        .json(&json!({"properties":{"message":"m"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    sim.fail_next_arm(1, 503);
    let (s, _) = put(url.clone(), "m".into()).await;
    assert_eq!(s, 503);
}

#[tokio::test]
async fn incident_entities() {
    let sim = sim().await;
    let tok = token(&sim, "https://management.azure.com/.default").await;
    let entities = json!([
        {"id": "x/Entities/1", "name": "1", "type": "Microsoft.SecurityInsights/Entities", "kind": "Account",
         "properties": {"accountName": "victim", "upnSuffix": "contoso.com", "aadUserId": "11111111-0000-4000-8000-000000000001", "friendlyName": "victim"}},
        {"id": "x/Entities/2", "name": "2", "type": "Microsoft.SecurityInsights/Entities", "kind": "Host",
         "properties": {"hostName": "pc1", "friendlyName": "pc1"}},
        {"id": "x/Entities/3", "name": "3", "type": "Microsoft.SecurityInsights/Entities", "kind": "Account",
         "properties": {"accountName": "other", "upnSuffix": "contoso.com", "friendlyName": "other"}}
    ]);
    sim.add_incident("inc-1", entities.clone());
    let r = client()
        .post(format!(
            "{}{}/entities?api-version=2025-09-01",
            sim.http_url(),
            sim.incident_arm_id("inc-1")
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["entities"], entities);
    assert_eq!(
        v["metaData"],
        json!([{"entityKind": "Account", "count": 2}, {"entityKind": "Host", "count": 1}])
    );

    let r = client()
        .post(format!(
            "{}{}/entities?api-version=2025-09-01",
            sim.http_url(),
            sim.incident_arm_id("nope")
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "NotFound");
}

#[tokio::test]
async fn graph_user_lookup() {
    let sim = sim().await;
    let oid = "11111111-0000-4000-8000-000000000001";
    sim.add_user(VICTIM, oid);
    let tok = token(&sim, "https://graph.microsoft.com/.default").await;
    let get = |id: &str, tok: String| {
        let url = format!(
            "{}/v1.0/users/{id}?$select=userPrincipalName",
            sim.http_url()
        );
        async move { client().get(url).bearer_auth(tok).send().await.unwrap() }
    };
    let r = get(oid, tok.clone()).await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], oid);
    assert_eq!(v["userPrincipalName"], VICTIM);

    let r = get("99999999-0000-4000-8000-000000000009", tok.clone()).await;
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Request_ResourceNotFound");

    let r = get(oid, exo_token(&sim).await).await;
    assert_eq!(r.status().as_u16(), 401);

    sim.fail_next_graph(1, 429);
    let r = get(oid, tok.clone()).await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn https_listener_with_the_ca_file() {
    let sim = sim().await;
    let pem = std::fs::read(sim.ca_file()).unwrap();
    let ca = reqwest::Certificate::from_pem(&pem).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_merge([ca])
        .build()
        .unwrap();
    let tid = sim.tenant_id();
    let r = c
        .get(format!(
            "{}/{tid}/v2.0/.well-known/openid-configuration",
            sim.https_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["issuer"], format!("{}/{tid}/v2.0", sim.https_url()));
    assert!(
        v["jwks_uri"]
            .as_str()
            .unwrap()
            .starts_with(&sim.https_url())
    );

    // Exchange over HTTPS, nextLink on the HTTPS base
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    sim.add_device(VICTIM, DeviceSpec::iphone());
    sim.add_device(VICTIM, DeviceSpec::iphone());
    let tok = exo_token(&sim).await;
    let r = c
        .post(format!(
            "{}/adminapi/beta/{tid}/InvokeCommand",
            sim.https_url()
        ))
        .bearer_auth(&tok)
        .header("Prefer", "odata.maxpagesize=1")
        .json(&cmd("Get-MobileDevice", json!({"Mailbox": VICTIM})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&sim.https_url())
    );

    // Without the CA the handshake fails.
    let plain = reqwest::Client::builder().build().unwrap();
    assert!(
        plain
            .get(format!("{}/{tid}/discovery/v2.0/keys", sim.https_url()))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let sim = sim().await;
    let r = client()
        .get(format!("{}/nothing/here", sim.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string());
    assert!(sim.ca_file().exists());
    assert_eq!(
        sim.workspace_arm_id(),
        format!(
            "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/soc-ws"
        )
    );
}

async fn get_json(url: String, tok: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client().get(url).bearer_auth(tok).send().await.unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        h,
    )
}

#[tokio::test]
async fn directory_reads_and_token_roles_follow_the_assignments() {
    let sim = sim().await;
    let base = sim.http_url();
    let app_id = sim.register_api(
        "api://wipehook-demo",
        &["Containment.Run", "Containment.Approve"],
    );
    let mi = "0d5f3b1a-7c2e-4e9a-8b6d-1f2e3d4c5b6a";
    sim.add_caller(
        mi,
        "Wipehook-Contain-Incident",
        PrincipalKind::ManagedIdentity,
        Some("Containment.Run"),
    );
    let graph = token(&sim, "https://graph.microsoft.com/.default").await;
    let c = claims_of(&graph);
    assert_eq!(
        c["roles"],
        json!([
            "User.Read.All",
            "Application.Read.All",
            "SecurityIncident.ReadWrite.All",
            "User.RevokeSessions.All",
            "User.EnableDisableAccount.All",
            "IdentityRiskyUser.ReadWrite.All"
        ])
    );

    // The app registration by App ID URI, and by app id.
    let (s, v, _) = get_json(
        format!(
            "{base}/v1.0/applications?$filter=identifierUris/any(x:x eq 'api://wipehook-demo')"
        ),
        &graph,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["appId"], app_id.as_str());
    assert_eq!(v["value"][0]["appRoles"][0]["value"], "Containment.Run");
    assert_eq!(
        v["value"][0]["appRoles"][0]["allowedMemberTypes"],
        json!(["Application"])
    );
    assert!(v["value"][0]["api"]["requestedAccessTokenVersion"].is_null());
    let (s, v, _) = get_json(
        format!("{base}/v1.0/applications?$filter=identifierUris/any(x:x eq 'api://other')"),
        &graph,
    )
    .await;
    assert_eq!((s, v["value"].as_array().unwrap().len()), (200, 0));
    let (s, v, _) = get_json(
        format!("{base}/v1.0/servicePrincipals(appId='{app_id}')"),
        &graph,
    )
    .await;
    assert_eq!(s, 200);
    let api_sp = v["id"].as_str().unwrap().to_string();
    // Who holds roles on it, and what the caller is.
    let (s, v, _) = get_json(
        format!("{base}/v1.0/servicePrincipals/{api_sp}/appRoleAssignedTo"),
        &graph,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"][0]["principalId"], mi);
    assert_eq!(v["value"][0]["resourceId"], api_sp.as_str());
    let (s, v, _) = get_json(format!("{base}/v1.0/servicePrincipals/{mi}"), &graph).await;
    assert_eq!(
        (s, v["servicePrincipalType"].as_str()),
        (200, Some("ManagedIdentity"))
    );
    let (s, v, _) = get_json(
        format!("{base}/v1.0/servicePrincipals/99999999-0000-4000-8000-000000000009"),
        &graph,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("Request_ResourceNotFound"))
    );

    // Without Application.Read.All: 403; the tokens follow the assignments.
    sim.revoke_app_role("Application.Read.All");
    sim.revoke_app_role("Exchange.ManageAsApp");
    let graph = token(&sim, "https://graph.microsoft.com/.default").await;
    assert_eq!(
        claims_of(&graph)["roles"],
        json!([
            "User.Read.All",
            "SecurityIncident.ReadWrite.All",
            "User.RevokeSessions.All",
            "User.EnableDisableAccount.All",
            "IdentityRiskyUser.ReadWrite.All"
        ])
    );
    let (s, v, _) = get_json(format!("{base}/v1.0/servicePrincipals/{mi}"), &graph).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("Authorization_RequestDenied"))
    );
    let exo_tok = exo_token(&sim).await;
    assert!(claims_of(&exo_tok).get("roles").is_none());
    let (s, _) = exo(
        &sim,
        &exo_tok,
        &cmd("Get-MobileDevice", json!({"Mailbox": VICTIM})),
    )
    .await;
    assert_eq!(s, 403, "no Exchange.ManageAsApp: 403");
    assert!(sim.graph_calls().iter().all(|c| c.method == "GET"));
    assert_eq!(sim.graph_calls().len(), 7);
}

#[tokio::test]
async fn azure_rbac_is_listed_and_enforced() {
    let sim = sim().await;
    let base = sim.http_url();
    let ws = sim.workspace_arm_id();
    let tok = token(&sim, "https://management.azure.com/.default").await;
    let oid = claims_of(&tok)["oid"].as_str().unwrap().to_string();
    let (s, v, _) = get_json(
        format!("{base}{ws}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=principalId eq '{oid}'"),
        &tok,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["value"][0]["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .ends_with("/3e150937-b8fe-4cfb-8069-0eaf05ecd056")
    );
    assert_eq!(v["value"][0]["properties"]["scope"], ws.as_str());
    let (s, v, _) = get_json(format!("{base}{ws}/providers/Microsoft.SecurityInsights/onboardingStates/default?api-version=2025-09-01"), &tok).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("default")));
    sim.add_incident("inc-list", json!([]));
    let (s, v, _) = get_json(format!("{base}{ws}/providers/Microsoft.SecurityInsights/incidents?api-version=2025-09-01&$top=1"), &tok).await;
    assert_eq!((s, v["value"][0]["name"].as_str()), (200, Some("inc-list")));
    // Another workspace does not resolve.
    let other = ws.replace("soc-ws", "other-ws");
    let (s, v, _) = get_json(
        format!(
            "{base}{other}/providers/Microsoft.SecurityInsights/incidents?api-version=2025-09-01"
        ),
        &tok,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    // Reader reads but cannot comment; without any role nothing.
    sim.revoke_azure_role("Microsoft Sentinel Responder");
    sim.grant_azure_role("Microsoft Sentinel Reader", &ws);
    let put = |tok: String| {
        let url = format!(
            "{base}{}/comments/c1?api-version=2025-09-01",
            sim.incident_arm_id("inc-list")
        );
        async move {
            client()
                .put(url)
                .bearer_auth(tok)
                .json(&json!({"properties": {"message": "x"}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put(tok.clone()).await, 403);
    sim.revoke_azure_role("Microsoft Sentinel Reader");
    let (s, v, _) = get_json(
        format!("{base}{ws}/providers/Microsoft.SecurityInsights/incidents?api-version=2025-09-01"),
        &tok,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    assert_eq!(sim.comment_puts(), 0);
    let calls = sim.arm_calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls.iter().filter(|c| c.method == "PUT").count(), 1);
}

#[tokio::test]
async fn exchange_rbac_reads_enforcement_and_renamed_fields() {
    let sim = sim().await;
    sim.add_device(VICTIM, DeviceSpec::iphone());
    let tok = exo_token(&sim).await;
    let oid = claims_of(&tok)["oid"].as_str().unwrap().to_string();
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd("Get-ManagementRoleAssignment", json!({"RoleAssignee": oid})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let roles: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["Role"].as_str())
        .collect();
    assert!(roles.contains(&"wipehook Mobile Wipe"), "{v}");
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-ManagementRoleEntry",
            json!({"Identity": "wipehook Mobile Wipe\\Clear-MobileDevice"}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["Name"], "Clear-MobileDevice");
    assert!(
        v["value"][0]["Parameters"]
            .as_array()
            .unwrap()
            .contains(&json!("AccountOnly"))
    );
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-ManagementRoleEntry",
            json!({"Identity": "wipehook Mobile Wipe\\*"}),
        ),
    )
    .await;
    assert_eq!((s, v["value"].as_array().unwrap().len()), (200, 4));

    // A cmdlet taken out of the role is no longer run.
    sim.remove_exchange_role_entry("Clear-MobileDevice");
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-ManagementRoleEntry",
            json!({"Identity": "wipehook Mobile Wipe\\Clear-MobileDevice"}),
        ),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let guid = sim.add_device(VICTIM, DeviceSpec::iphone());
    let (s, v) = exo(
        &sim,
        &tok,
        &cmd(
            "Clear-MobileDevice",
            json!({"Identity": guid, "AccountOnly": true, "Confirm": false}),
        ),
    )
    .await;
    assert_eq!(s, 400);
    assert!(detail(&v).contains("CommandNotFoundException"), "{v}");
    sim.remove_exchange_rbac_read();
    let (s, _) = exo(
        &sim,
        &tok,
        &cmd(
            "Get-ManagementRoleEntry",
            json!({"Identity": "*\\Clear-MobileDevice"}),
        ),
    )
    .await;
    assert_eq!(s, 400);

    // A renamed field, and restored.
    sim.rename_exchange_field("Get-MobileDevice", "ClientType", "ClientKind");
    let (_, v) = exo(
        &sim,
        &tok,
        &cmd("Get-MobileDevice", json!({"Mailbox": VICTIM})),
    )
    .await;
    assert!(
        v["value"][0].get("ClientType").is_none() && v["value"][0]["ClientKind"] == "EAS",
        "{v}"
    );
    sim.restore_exchange_fields();
    let (_, v) = exo(
        &sim,
        &tok,
        &cmd("Get-MobileDevice", json!({"Mailbox": VICTIM})),
    )
    .await;
    assert_eq!(v["value"][0]["ClientType"], "EAS");
    assert_eq!(sim.device(&guid).unwrap().wipe_request_count, 0);
}

#[tokio::test]
async fn the_tenants_cloud_and_clock_are_in_the_openid_answer() {
    let sim = sim().await;
    let url = format!(
        "{}/{}/.well-known/openid-configuration",
        sim.http_url(),
        sim.tenant_id()
    );
    let (_, v, h) = get_json(url.clone(), "").await;
    assert_eq!(v["cloud_instance_name"], "microsoftonline.com");
    assert!(h.contains_key("date"));
    sim.set_cloud_instance_name("microsoftonline.us");
    sim.set_clock_offset(-600);
    let (_, v, h) = get_json(url, "").await;
    assert_eq!(v["cloud_instance_name"], "microsoftonline.us");
    let date = h["date"].to_str().unwrap().to_string();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(&date, &fmt)
        .unwrap()
        .assume_utc();
    let behind = time::OffsetDateTime::now_utc() - at;
    assert!(
        behind.whole_seconds() >= 590 && behind.whole_seconds() <= 610,
        "{date}"
    );
}

#[tokio::test]
async fn seeded_fault_rules_are_per_subject_and_reproducible() {
    use crate::{FaultRule, Service};
    let sim = sim().await;
    sim.add_user(VICTIM, "11111111-0000-4000-8000-000000000001");
    let tok = exo_token(&sim).await;
    let body = cmd("Get-MobileDevice", json!({"Mailbox": VICTIM}));
    let rule = FaultRule::mix(
        Service::Exchange,
        0.5,
        vec![(1, Fault::Status(503)), (1, Fault::Status(504))],
    )
    .call("Get-MobileDevice");
    let mut runs = vec![];
    for _ in 0..2 {
        sim.clear_fault_rules();
        sim.set_fault_seed(42);
        sim.add_fault_rule(rule.clone());
        let mut statuses = vec![];
        for _ in 0..20 {
            statuses.push(exo(&sim, &tok, &body).await.0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "the same seed, the same faults");
    let failed = runs[0].iter().filter(|s| **s != 200).count();
    assert!((3..=17).contains(&failed), "about half fail: {:?}", runs[0]);
    assert!(runs[0].iter().all(|s| [200, 503, 504].contains(s)));
    // Another cmdlet is untouched.
    let other = cmd("Get-MobileDeviceStatistics", json!({"Mailbox": VICTIM}));
    for _ in 0..5 {
        assert_eq!(exo(&sim, &tok, &other).await.0, 200);
    }

    // A dropped connection: no answer, nothing executed.
    sim.clear_fault_rules();
    let id = sim.add_fault_rule(FaultRule::always(Service::Exchange, Fault::Dropped).limit(1));
    let r = client()
        .post(exo_url(&sim))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await;
    let lost = match r {
        Err(_) => true,
        Ok(r) => r.text().await.is_err(),
    };
    assert!(lost, "the answer is lost");
    sim.remove_fault_rule(id);
    assert_eq!(exo(&sim, &tok, &body).await.0, 200, "the limit was one");

    // A hang answers, late.
    sim.add_fault_rule(FaultRule::always(Service::Exchange, Fault::Hang { ms: 300 }).limit(1));
    let t = std::time::Instant::now();
    assert_eq!(exo(&sim, &tok, &body).await.0, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        sim.injected_faults().last().unwrap().fault,
        Fault::Hang { ms: 300 }
    );
}
