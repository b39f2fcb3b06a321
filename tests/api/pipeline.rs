//! The containment pipeline, end to end (pipeline issue, points 4-9).

use std::time::Duration;

use serde_json::{Value, json};
use wipehook::harness::account_entity;
use wipehook_sim::{DeviceSpec, Fault, SimOptions};

use crate::both_stores;
use crate::helpers::*;

fn devices_of<'a>(result: &'a Value, upn: &str) -> Vec<&'a Value> {
    result["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == upn)
        .map(|u| u["devices"].as_array().unwrap().iter().collect())
        .unwrap_or_default()
}

async fn happy_path(store: StoreKind) {
    // Users found in the incident's own entity list join the run (this
    // tenant accepts them; the default holds them: see identity.rs).
    let Some(app) = spawn_with(SimOptions::default(), store, |s| {
        s.policy.users_found_later = wipehook::config::FoundLater::Contain
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("alice@contoso.com", "a0000000-0000-4000-8000-000000000001");
    sim.add_user("dave@contoso.com", "a0000000-0000-4000-8000-000000000002");
    sim.add_user("carol@contoso.com", "a0000000-0000-4000-8000-000000000003");
    sim.add_user("erin@contoso.com", "a0000000-0000-4000-8000-000000000004");
    let a1 = sim.add_device("alice@contoso.com", DeviceSpec::iphone());
    let a2 = sim.add_device("alice@contoso.com", DeviceSpec::outlook());
    let old = sim.add_device("dave@contoso.com", DeviceSpec::old_eas());
    let c1 = sim.add_device("carol@contoso.com", DeviceSpec::outlook());
    let e1 = sim.add_device("erin@contoso.com", DeviceSpec::iphone());
    // Someone else's device: must never be touched.
    sim.add_user(
        "bystander@contoso.com",
        "a0000000-0000-4000-8000-000000000009",
    );
    let other = sim.add_device("bystander@contoso.com", DeviceSpec::iphone());

    let mut body = app.h.incident_body(
        "inc-happy",
        1001,
        "High",
        &["Alice@Contoso.com", "dave@contoso.com"],
    );
    let ents = body["object"]["properties"]["relatedEntities"]
        .as_array_mut()
        .unwrap();
    // PascalCase duplicate of Alice, an Account with only aadUserId (Erin, via
    // Graph), an Account with an empty UPN suffix, a Mailbox entity.
    ents.push(json!({"Type": "account", "Name": "alice", "UPNSuffix": "contoso.com"}));
    ents.push(json!({"kind": "Account", "properties": {"aadUserId": "a0000000-0000-4000-8000-000000000004", "friendlyName": "Erin"}}));
    ents.push(json!({"kind": "Account", "properties": {"accountName": "ghost", "upnSuffix": "", "ntDomain": "CONTOSO"}}));
    ents.push(json!({"kind": "Host", "properties": {"hostName": "pc1"}}));
    // Sentinel's own entity list (ARM) knows Carol too: merged later.
    let mut arm = ents.clone();
    arm.push(account_entity("carol@contoso.com"));
    sim.add_incident("inc-happy", Value::Array(arm));

    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/api/v1/runs/", app.base)));
    assert_eq!(r.headers()["retry-after"], "1");
    let accepted: Value = r.json().await.unwrap();
    assert!(location.ends_with(accepted["run_id"].as_str().unwrap()));

    let result = app.wait_done(&location).await;
    assert_eq!(result["status"], "completed", "{result}");
    let requested: Vec<&str> = ["alice@contoso.com", "carol@contoso.com", "erin@contoso.com"]
        .iter()
        .flat_map(|u| devices_of(&result, u))
        .filter(|d| d["outcome"] == "requested")
        .map(|d| d["guid"].as_str().unwrap())
        .collect();
    for g in [&a1, &a2, &c1, &e1] {
        assert!(requested.contains(&g.as_str()), "{g} requested: {result}");
    }
    let dave = devices_of(&result, "dave@contoso.com");
    assert_eq!(dave[0]["guid"], old.as_str());
    assert_eq!(dave[0]["outcome"], "skipped");
    assert!(dave[0]["reason"].as_str().unwrap().contains("16.1"));
    let carol = result["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == "carol@contoso.com")
        .unwrap();
    assert!(
        carol["source"]
            .as_str()
            .unwrap()
            .contains("incident's entities")
    );
    let erin = result["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == "erin@contoso.com")
        .unwrap();
    assert!(erin["source"].as_str().unwrap().contains("Graph"));
    assert!(
        result["unresolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["reason"].as_str().unwrap().contains("empty UPN suffix"))
    );
    assert_eq!(
        result["users"].as_array().unwrap().len(),
        4,
        "alice deduplicated, lower-cased"
    );

    // Exchange saw exactly what it should.
    let calls = sim.exchange_calls();
    assert_safe(&calls);
    for c in calls.iter().filter(|c| c.cmdlet == "Get-MobileDevice") {
        assert_eq!(
            c.anchor_mailbox.as_deref(),
            Some(format!("UPN:{}", c.parameters["Mailbox"].as_str().unwrap()).as_str())
        );
    }
    assert_eq!(app.successful_clears().len(), 4);
    let dev = sim.device(&other).unwrap();
    assert!(dev.wipe_requested_at.is_none() && !dev.full_wipe_requested);
    assert!(!sim.device(&old).unwrap().full_wipe_requested);
    // Tokens were asked for the real resource identifiers, never our URLs.
    for t in sim.token_requests() {
        assert!(
            [
                "https://outlook.office365.com/.default",
                "https://management.azure.com/.default",
                "https://graph.microsoft.com/.default"
            ]
            .contains(&t.scope_or_resource.as_str()),
            "token scope {}",
            t.scope_or_resource
        );
    }

    // One comment on the incident, with the table.
    let incident = app.incident_id("inc-happy");
    app.eventually("comment written", || !sim.comments(&incident).is_empty())
        .await;
    let comments = sim.comments(&incident);
    // One note per phase: the phones have not answered. A user found only in
    // the incident's entities (carol) may join after the known users were
    // decided; the record does not wait for her (issue 12): then she is the
    // second note's one change.
    let texts: Vec<String> = comments.iter().map(|c| c.message.clone()).collect();
    assert!(
        texts.len() == 1
            || (texts.len() == 2
                && texts[1].contains("Since the last note")
                && texts[1].contains("carol@contoso.com")),
        "{texts:#?}"
    );
    let html = comments.last().map(|c| &c.message).unwrap();
    // The verdict first, in plain words: Dave's old phone cannot be wiped
    // account-only, so the run is not "contained" and says who needs a person.
    assert!(
        html.starts_with(
            "<p><b>NOT CONTAINED — NEEDS YOU: 1 of 4 users (dave@contoso.com).</b></p>"
        ),
        "{html}"
    );
    assert!(
        html.contains("alice@contoso.com")
            && html.contains("waiting for the phone")
            && html.contains("16.1"),
        "{html}"
    );
    assert!(html.contains(accepted["run_id"].as_str().unwrap()));
    assert!(
        !html.contains("<table>"),
        "lists, not tables, for a narrow panel"
    );
}
both_stores!(happy_path_incident_trigger, happy_path);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_trigger_contains_one_account_with_and_without_an_incident() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("frank@contoso.com", "b0000000-0000-4000-8000-000000000001");
    let g = sim.add_device("frank@contoso.com", DeviceSpec::iphone());
    let incident = app.incident_id("inc-entity");
    let body = json!({"Entity": {"properties": {"Name": "frank", "UPNSuffix": "contoso.com"}}, "IncidentArmID": incident});
    let result = app.contain(&body).await;
    assert_eq!(result["trigger"], "entity");
    assert_eq!(
        devices_of(&result, "frank@contoso.com")[0]["outcome"],
        "requested"
    );
    assert_eq!(sim.device(&g).unwrap().wipe_request_count, 1);
    app.eventually("comment on the incident", || {
        !sim.comments(&incident).is_empty()
    })
    .await;

    // Without an incident: the result lives only in the run.
    sim.add_user("gina@contoso.com", "b0000000-0000-4000-8000-000000000002");
    sim.add_device("gina@contoso.com", DeviceSpec::outlook());
    let puts = sim.comment_puts();
    let body = json!({"Entity": {"properties": {"Name": "gina", "UPNSuffix": "contoso.com"}}, "IncidentArmID": null});
    let result = app.contain(&body).await;
    assert_eq!(
        devices_of(&result, "gina@contoso.com")[0]["outcome"],
        "requested"
    );
    assert!(result["incident"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.comment_puts(), puts, "no comment without an incident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_devices_still_ends_with_200_and_says_why() {
    let app = spawn_app().await;
    app.h.sim.add_user(
        "nodevice@contoso.com",
        "c0000000-0000-4000-8000-000000000001",
    );
    let result = app
        .contain(
            &app.h
                .incident_body("inc-none", 7, "High", &["nodevice@contoso.com"]),
        )
        .await;
    assert_eq!(result["status"], "completed");
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("no mobile device"),
        "{result}"
    );
    app.h.sim.add_incident("inc-empty", json!([]));
    let result = app
        .contain(&app.h.incident_body("inc-empty", 8, "High", &[]))
        .await;
    assert_eq!(result["status"], "completed");
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("no Account or Mailbox"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_transient_failures_are_retried_and_retry_after_honoured() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("hank@contoso.com", "d0000000-0000-4000-8000-000000000001");
    let g1 = sim.add_device("hank@contoso.com", DeviceSpec::iphone());
    let g2 = sim.add_device("hank@contoso.com", DeviceSpec::outlook());
    sim.fail_next_exchange(
        1,
        Fault::Throttle429 {
            retry_after_secs: 0.4,
        },
    );
    sim.fail_next_exchange(1, Fault::ConcurrencyMessage);
    sim.fail_next_exchange(1, Fault::Status(503));
    sim.fail_next_exchange(1, Fault::Unauthorized401);
    let result = app
        .contain(
            &app.h
                .incident_body("inc-throttle", 9, "High", &["hank@contoso.com"]),
        )
        .await;
    for g in [&g1, &g2] {
        assert_eq!(
            sim.device(g).unwrap().wipe_request_count,
            1,
            "exactly one successful wipe per device"
        );
    }
    assert!(
        devices_of(&result, "hank@contoso.com")
            .iter()
            .all(|d| d["outcome"] == "requested")
    );
    let calls = sim.exchange_calls();
    assert_safe(&calls);
    // Nothing lost; the Retry-After spacing itself is checked below.
    let first_429 = calls
        .iter()
        .position(|c| c.response_status == 429)
        .expect("a 429");
    assert!(calls.len() > first_429 + 1);
    assert!(sim.throttled_count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_at_full_scale() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("ivy@contoso.com", "d0000000-0000-4000-8000-000000000002");
    sim.add_device("ivy@contoso.com", DeviceSpec::iphone());
    sim.fail_next_exchange(
        1,
        Fault::Throttle429 {
            retry_after_secs: 0.7,
        },
    );
    app.contain(
        &app.h
            .incident_body("inc-ra", 10, "High", &["ivy@contoso.com"]),
    )
    .await;
    let calls = sim.exchange_calls();
    let i = calls.iter().position(|c| c.response_status == 429).unwrap();
    // The throttled call's own retry (the triage's statistics read runs
    // beside the device list, so the next call of the log may be the other).
    let retry = calls[i + 1..]
        .iter()
        .find(|c| c.cmdlet == calls[i].cmdlet)
        .expect("the throttled call is retried");
    let gap = retry.at.duration_since(calls[i].at).unwrap();
    assert!(
        gap >= Duration::from_millis(650),
        "next call after {gap:?}, Retry-After was 0.7 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_writes_are_retried_until_they_succeed_and_never_duplicated() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("jack@contoso.com", "e0000000-0000-4000-8000-000000000001");
    sim.add_device("jack@contoso.com", DeviceSpec::iphone());
    sim.add_incident("inc-arm", json!([]));
    sim.fail_next_arm(3, 503);
    app.contain(
        &app.h
            .incident_body("inc-arm", 11, "High", &["jack@contoso.com"]),
    )
    .await;
    let incident = app.incident_id("inc-arm");
    app.eventually("comment after ARM recovered", || {
        !sim.comments(&incident).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.comments(&incident).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_request_timeout_is_retried_not_taken_for_an_answer() {
    // 408 (a front end or proxy that gave up reading the request) says
    // nothing of the person: the look-up is asked again, as ARM's and
    // Exchange's 408 are, and the user is contained.
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("kim@contoso.com", "e0000000-0000-4000-8000-000000000408");
    sim.add_device("kim@contoso.com", DeviceSpec::iphone());
    sim.fail_next_graph(1, 408);
    let r = app
        .contain(
            &app.h
                .incident_body("inc-408", 408, "High", &["kim@contoso.com"]),
        )
        .await;
    assert!(
        sim.graph_calls().iter().any(|c| c.status == 408),
        "the fault was served: {r}"
    );
    assert_eq!(app.successful_clears().len(), 1, "{r}");
    assert!(
        app.successful_clears()[0].parameters["AccountOnly"] == json!(true),
        "account-only"
    );
}
