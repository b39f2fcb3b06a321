//! What an analyst can do from an incident in the Defender portal, where
//! playbooks run only on incidents: rerun, contain one more (tagged)
//! account, approve, cancel. Each from the body its playbook sends.

use serde_json::{Value, json};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::both_stores;
use crate::helpers::*;

const TAGGED: &str = "/api/v1/sentinel/incidents/accounts";

fn tag(body: &mut Value, labels: &[&str]) {
    body["object"]["properties"]["labels"] = json!(
        labels
            .iter()
            .map(|l| json!({"labelName": l, "labelType": "User"}))
            .collect::<Vec<_>>()
    );
}

async fn an_analyst_contains_one_more_account_from_the_incident(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("dee@contoso.com", "d0000000-0000-4000-8000-000000000001");
    sim.add_user("eli@contoso.com", "d0000000-0000-4000-8000-000000000002");
    let dee = sim.add_device("dee@contoso.com", DeviceSpec::iphone());
    let eli = sim.add_device("eli@contoso.com", DeviceSpec::iphone());
    let mut body = app.h.incident_body(
        "inc-tagged",
        97,
        "High",
        &["dee@contoso.com", "eli@contoso.com"],
    );
    tag(&mut body, &["triage", "WIPEHOOK:contain:Eli@contoso.com"]);
    let r = app.post(TAGGED, Some(&app.h.run_token()), &body).await;
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    app.drain().await;
    let result = app.wait_done(&location).await;
    assert_eq!(result["status"], "completed", "{result}");
    let users = result["users"].as_array().unwrap();
    assert_eq!(users.len(), 1, "only the tagged account: {result}");
    assert_eq!(users[0]["upn"], "eli@contoso.com");
    assert_eq!(sim.device(&eli).unwrap().wipe_request_count, 1);
    assert_eq!(sim.device(&dee).unwrap().wipe_request_count, 0);
    app.wait_note(
        &app.incident_id("inc-tagged"),
        "the record is on the incident",
        |t| t.contains("eli@contoso.com"),
    )
    .await;

    // Rerun from the incident (a new playbook run): a new run; what the
    // first run wiped is reported, not sent again.
    let rerun = app
        .client
        .post(format!("{}/api/v1/sentinel/incidents", app.base))
        .bearer_auth(app.h.run_token())
        .header("x-ms-workflow-run-id", "08584000000000000000000000001")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(rerun.status().as_u16(), 202);
    let location = rerun.headers()["location"].to_str().unwrap().to_string();
    app.drain().await;
    let again = app.wait_done(&location).await;
    let outcome = |upn: &str| {
        again["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upn"] == upn)
            .unwrap()["devices"][0]["outcome"]
            .clone()
    };
    assert_eq!(outcome("eli@contoso.com"), "already_requested");
    assert_eq!(outcome("dee@contoso.com"), "requested");
    assert_eq!(sim.device(&eli).unwrap().wipe_request_count, 1);
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    an_analyst_contains_one_more_account_from_the_incident_,
    an_analyst_contains_one_more_account_from_the_incident
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_must_name_an_account_of_the_incident() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("fay@contoso.com", "d0000000-0000-4000-8000-000000000003");
    sim.add_user("gus@contoso.com", "d0000000-0000-4000-8000-000000000004");
    let gus = sim.add_device("gus@contoso.com", DeviceSpec::iphone());
    let post = |body: Value| {
        let app = &app;
        async move {
            let r = app.post(TAGGED, Some(&app.h.run_token()), &body).await;
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or("").to_string(),
                retry,
            )
        }
    };
    // No tag.
    let body = app
        .h
        .incident_body("inc-tag-x", 98, "High", &["fay@contoso.com"]);
    assert_eq!(post(body.clone()).await.1, "no_account_tag");
    // A tag for someone who is not an entity of this incident: refused,
    // whatever the tag says (a tag is not an authorisation to wipe anyone).
    let mut old = body.clone();
    old["object"]["properties"]["createdTimeUtc"] = json!("2026-01-01T00:00:00Z");
    tag(&mut old, &["wipehook:contain:gus@contoso.com"]);
    let (status, code, _) = post(old).await;
    assert_eq!((status, code.as_str()), (422, "account_not_in_incident"));
    // The same on an incident created a moment ago: it may not have reached
    // Sentinel with all its entities yet: retryable.
    let mut fresh = body.clone();
    fresh["object"]["properties"]["createdTimeUtc"] = json!(
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    tag(&mut fresh, &["wipehook:contain:gus@contoso.com"]);
    let (status, code, retry) = post(fresh).await;
    assert_eq!(
        (status, code.as_str(), retry.as_deref()),
        (503, "incident_not_synchronised", Some("60"))
    );
    assert_eq!(sim.device(&gus).unwrap().wipe_request_count, 0);
    assert!(
        app.running()
            .shared
            .store
            .list_runs(10)
            .await
            .unwrap()
            .is_empty(),
        "nothing recorded"
    );
}
