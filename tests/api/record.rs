//! The record on the incident, as an analyst in the Defender portal reads
//! it: each comment as first written (the portal does not show edits), the
//! verdict on the first line, the final truth last. Every variant is also
//! rendered in headless Chromium at the panel's width (`browser`).

use std::time::Duration;

use serde_json::json;
use wipehook::domain::Mode;
use wipehook_sim::{DeviceSpec, Fault, SimOptions};

use crate::browser::check_note;
use crate::helpers::*;

/// The notes of an incident once the run's record has settled: waits until
/// the last note starts with `verdict`, then checks every note in the
/// browser under `variant`.
async fn settled_notes(app: &TestApp, incident: &str, verdict: &str, variant: &str) -> Vec<String> {
    let id = app.incident_id(incident);
    let head = format!("<p><b>{verdict}");
    let started = std::time::Instant::now();
    while !app.notes(&id).last().is_some_and(|t| t.starts_with(&head)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the last note never said {verdict}: {:#?}",
            app.notes(&id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing else is pending: the last note is the final truth.
    app.drain().await;
    let notes = app.notes(&id);
    assert!(
        notes
            .last()
            .unwrap()
            .starts_with(&format!("<p><b>{verdict}")),
        "the last note states the final truth ({verdict}): {notes:#?}"
    );
    for (i, n) in notes.iter().enumerate() {
        check_note(&format!("{variant}-{}", i + 1), n).await;
    }
    notes
}

/// Wait until the run has seen `n` acknowledgements.
async fn wait_acks(app: &TestApp, run: &str, n: usize) {
    let started = std::time::Instant::now();
    while app.run(run).await["summary"]["acknowledged"] != n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} acknowledgements not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn first_line(note: &str) -> &str {
    note.split("</b></p>").next().unwrap_or(note)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_list_that_keeps_failing_is_not_contained() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("ana@contoso.com", "c1000000-0000-4000-8000-000000000001");
    sim.add_device("ana@contoso.com", DeviceSpec::iphone());
    // Exchange answers every device list with a plain HTTP 500.
    sim.fail_next_cmdlet("Get-MobileDevice", 50, Fault::PlainStatus(500));
    let body = app
        .h
        .incident_body("rec-500", 301, "High", &["ana@contoso.com"]);
    sim.add_incident(
        "rec-500",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "not_contained", "{r}");
    assert_eq!(r["users"][0]["outcome"], "not_contained");
    assert_eq!(r["summary"]["outcomes"]["not_contained"], 1);
    assert!(
        r["users"][0]["needs"][0]
            .as_str()
            .unwrap()
            .contains("run the containment playbook on the incident again"),
        "{r}"
    );
    let lists = sim
        .exchange_calls()
        .iter()
        .filter(|c| c.cmdlet == "Get-MobileDevice")
        .count();
    assert!(lists > 1, "a plain 500 is retried before giving up");
    let notes = settled_notes(&app, "rec-500", "NOT CONTAINED — NEEDS YOU", "failed").await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(
        first_line(&notes[0]),
        "<p><b>NOT CONTAINED — NEEDS YOU: 1 of 1 user (ana@contoso.com)."
    );
    assert!(!notes[0].contains("CONTAINED:"), "{}", notes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_wipes_failing_is_not_contained() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("bo@contoso.com", "c1000000-0000-4000-8000-000000000002");
    for _ in 0..3 {
        sim.add_device("bo@contoso.com", DeviceSpec::iphone());
    }
    sim.fail_next_cmdlet(
        "Clear-MobileDevice",
        2,
        Fault::CmdletError {
            status: 500,
            exception: "Microsoft.Exchange.Data.Storage.StoragePermanentException".into(),
            text: "The device could not be wiped.".into(),
        },
    );
    let body = app
        .h
        .incident_body("rec-partial", 302, "High", &["bo@contoso.com"]);
    sim.add_incident(
        "rec-partial",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["summary"]["failed"], 2, "{r}");
    assert_eq!(r["summary"]["wipes_requested"], 1);
    assert_eq!(r["outcome"], "not_contained", "{r}");
    let notes = settled_notes(
        &app,
        "rec-partial",
        "NOT CONTAINED — NEEDS YOU",
        "wipes-failed",
    )
    .await;
    let last = notes.last().unwrap();
    assert_eq!(
        last.matches("wipe failed: ").count(),
        2,
        "one line per failed phone: {last}"
    );
    assert_eq!(
        last.matches("→ ").count(),
        1,
        "what would contain the user, once for the same problem: {last}"
    );
    assert!(
        last.contains("waiting for the phone"),
        "the one that went through: {last}"
    );
    assert_safe(&sim.exchange_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_old_phone_leaves_its_user_not_contained_and_the_run_partial() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("cy@contoso.com", "c1000000-0000-4000-8000-000000000003");
    sim.add_user("di@contoso.com", "c1000000-0000-4000-8000-000000000004");
    let cy = sim.add_device("cy@contoso.com", DeviceSpec::iphone());
    sim.add_device("di@contoso.com", DeviceSpec::old_eas());
    let body = app.h.incident_body(
        "rec-eas",
        303,
        "High",
        &["cy@contoso.com", "di@contoso.com"],
    );
    sim.add_incident(
        "rec-eas",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "partially_contained", "{r}");
    let by = |upn: &str| {
        r["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upn"] == upn)
            .unwrap()
            .clone()
    };
    assert_eq!(by("cy@contoso.com")["outcome"], "pending_acknowledgement");
    assert_eq!(by("di@contoso.com")["outcome"], "not_contained");
    assert_eq!(by("di@contoso.com")["devices"][0]["skip_cause"], "old_eas");
    sim.sync_device(&cy);
    wait_acks(&app, r["run_id"].as_str().unwrap(), 1).await;
    app.wait_note(
        &app.incident_id("rec-eas"),
        "the acknowledgement's note",
        |t| t.contains("acknowledged the wipe at"),
    )
    .await;
    // Cy's phone acknowledges: Di still needs a person, so never "contained".
    let notes = settled_notes(
        &app,
        "rec-eas",
        "NOT CONTAINED — NEEDS YOU",
        "not-contained",
    )
    .await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(
        first_line(&notes[1]),
        "<p><b>NOT CONTAINED — NEEDS YOU: 1 of 2 users (di@contoso.com)."
    );
    assert!(
        notes[1].contains("acknowledged the wipe at"),
        "{}",
        notes[1]
    );
    assert!(
        notes[1].contains("Intune"),
        "what would contain Di: {}",
        notes[1]
    );
    let r = app.run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(r["outcome"], "partially_contained");
    assert_eq!(r["summary"]["outcomes"]["contained"], 1);
    assert_eq!(r["summary"]["outcomes"]["not_contained"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_then_acknowledged_is_contained_only_after_the_phone_says_so() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("ed@contoso.com", "c1000000-0000-4000-8000-000000000005");
    sim.set_display_name("ed@contoso.com", "Ed Example");
    let g = sim.add_device("ed@contoso.com", DeviceSpec::iphone());
    let h = sim.add_device("ed@contoso.com", DeviceSpec::outlook());
    let body = app
        .h
        .incident_body("rec-ack", 304, "High", &["ed@contoso.com"]);
    sim.add_incident(
        "rec-ack",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "pending_acknowledgement", "{r}");
    let notes = settled_notes(&app, "rec-ack", "WAITING FOR PHONES", "normal").await;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].contains("<b>Ed Example</b> ed@contoso.com"),
        "named once, with the display name: {}",
        notes[0]
    );
    assert!(
        notes[0].contains("Wipehook-Cancel-Run"),
        "the undo path: {}",
        notes[0]
    );
    assert!(!notes[0].contains("acknowledged the wipe"));
    sim.sync_device(&g);
    sim.sync_device(&h);
    wait_acks(&app, r["run_id"].as_str().unwrap(), 2).await;
    let notes = settled_notes(&app, "rec-ack", "CONTAINED", "acknowledged").await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(
        first_line(&notes[1]),
        "<p><b>CONTAINED: every phone of 1 user acknowledged the account-only wipe."
    );
    assert!(
        !notes[1].contains("Undo:"),
        "nothing left to undo: {}",
        notes[1]
    );
    let r = app.run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(r["outcome"], "contained");
    assert_eq!(r["users"][0]["outcome"], "contained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_approved_and_expired_each_get_a_note() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (i, u) in ["fay@contoso.com", "gus@contoso.com"].iter().enumerate() {
        sim.add_user(u, &format!("c2000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let body = app.h.incident_body(
        "rec-held",
        305,
        "High",
        &["fay@contoso.com", "gus@contoso.com"],
    );
    sim.add_incident(
        "rec-held",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "held", "{r}");
    assert!(r["hold_expires_at"].is_string(), "{r}");
    let notes = settled_notes(&app, "rec-held", "HELD — NEEDS APPROVAL", "held").await;
    assert!(
        notes[0].contains("run the playbook Wipehook-Approve-Run on this incident before ")
            && notes[0].contains(" UTC."),
        "how to approve, and by when, in UTC: {}",
        notes[0]
    );
    assert!(
        !notes[0].contains("/api/v1/"),
        "no raw API URL: {}",
        notes[0]
    );
    let ok = app
        .post(
            "/api/v1/sentinel/incidents/approve",
            Some(&app.h.approver_token()),
            &body,
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    let notes = settled_notes(&app, "rec-held", "WAITING FOR PHONES", "approved").await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes[1].contains("approved by"), "{}", notes[1]);

    // A hold nobody approves expires: said, and not "contained".
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
        s.policy.hold_expiry = Duration::from_millis(600);
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (i, u) in ["hal@contoso.com", "ivy@contoso.com"].iter().enumerate() {
        sim.add_user(u, &format!("c3000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let body = app.h.incident_body(
        "rec-exp",
        306,
        "High",
        &["hal@contoso.com", "ivy@contoso.com"],
    );
    sim.add_incident(
        "rec-exp",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    app.contain(&body).await;
    let notes = settled_notes(&app, "rec-exp", "NOT CONTAINED — NEEDS YOU", "expired").await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes[0].contains("HELD — NEEDS APPROVAL"));
    assert!(
        notes[1].contains("the hold expired without approval"),
        "{}",
        notes[1]
    );
    assert!(app.clears().is_empty(), "nothing held was wiped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_says_what_was_undone_and_what_was_gone() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("jo@contoso.com", "c4000000-0000-4000-8000-000000000001");
    let acked = sim.add_device("jo@contoso.com", DeviceSpec::iphone());
    sim.add_device("jo@contoso.com", DeviceSpec::outlook());
    let body = app
        .h
        .incident_body("rec-cancel", 307, "High", &["jo@contoso.com"]);
    sim.add_incident(
        "rec-cancel",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    sim.sync_device(&acked);
    let id = r["run_id"].as_str().unwrap().to_string();
    // Let the follow-up see the acknowledgement first.
    wait_acks(&app, &id, 1).await;
    let ok = app
        .post(
            "/api/v1/sentinel/incidents/cancel",
            Some(&app.h.approver_token()),
            &body,
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    app.wait_note(
        &app.incident_id("rec-cancel"),
        "the cancel's outcome",
        |t| t.contains("1 wipe cancelled before the phone received it"),
    )
    .await;
    let notes = settled_notes(&app, "rec-cancel", "CANCELLED", "cancelled").await;
    let last = notes.last().unwrap();
    assert!(
        last.contains("1 wipe cancelled before the phone received it; 1 wipe was already acknowledged (that mail is gone)"),
        "{last}"
    );
    assert_eq!(app.run(&id).await["outcome"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_nothing_to_do() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.mode = Mode::DryRun
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("kim@contoso.com", "c5000000-0000-4000-8000-000000000001");
    sim.add_device("kim@contoso.com", DeviceSpec::iphone());
    let body = app
        .h
        .incident_body("rec-dry", 308, "High", &["kim@contoso.com"]);
    sim.add_incident(
        "rec-dry",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "dry_run", "{r}");
    let notes = settled_notes(&app, "rec-dry", "DRY RUN", "dry-run").await;
    assert_eq!(
        first_line(&notes[0]),
        "<p><b>DRY RUN: 1 wipe would have been requested; none was sent."
    );
    assert!(app.clears().is_empty());

    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("lou@contoso.com", "c5000000-0000-4000-8000-000000000002");
    let body = app
        .h
        .incident_body("rec-none", 309, "High", &["lou@contoso.com"]);
    sim.add_incident(
        "rec-none",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["outcome"], "nothing_to_do", "{r}");
    let notes = settled_notes(&app, "rec-none", "NOTHING TO DO", "nothing-to-do").await;
    assert_eq!(
        first_line(&notes[0]),
        "<p><b>NOTHING TO DO: no mobile device was found for the affected users."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_users_fit_one_note_and_each_is_named() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 300;
        s.policy.max_wipes_per_hour = 1000;
        s.guard.max_wipes_per_hour = 1000;
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    let users: Vec<String> = (0..300).map(|i| format!("u{i:03}@contoso.com")).collect();
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("c6000000-0000-4000-8000-{i:012}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = app.h.incident_body("rec-300", 310, "High", &refs);
    let r = app.contain(&body).await;
    assert_eq!(r["summary"]["wipes_requested"], 300, "{}", r["summary"]);
    let notes = settled_notes(&app, "rec-300", "WAITING FOR PHONES", "300-users").await;
    assert_eq!(notes.len(), 1);
    let n = &notes[0];
    assert!(
        n.chars().count() <= 30_000,
        "{} characters",
        n.chars().count()
    );
    for u in &users {
        assert!(n.contains(u.as_str()), "{u} is named");
    }
}

/// Sentinel allows 100 comments per incident. A run never takes the last
/// ones for a note that is not its final truth, and never writes past 100;
/// what it could not write stays in `GET /api/v1/runs/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_near_the_comment_limit_gets_only_the_final_truth() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("max@contoso.com", "c7000000-0000-4000-8000-000000000001");
    let g = sim.add_device("max@contoso.com", DeviceSpec::iphone());
    sim.add_analyst_comments("rec-full", 99);
    let mut body = app
        .h
        .incident_body("rec-full", 311, "High", &["max@contoso.com"]);
    body["object"]["properties"]["additionalData"] = json!({"commentsCount": 99});
    let r = app.contain(&body).await;
    let id = app.incident_id("rec-full");
    // The "waiting" note would leave no room for the final truth: not written.
    app.drain().await;
    assert_eq!(
        sim.comments(&id).len(),
        99,
        "no note that is not the final truth"
    );
    sim.sync_device(&g);
    let last = app
        .wait_note(&id, "the final truth", |t| t.starts_with("<p><b>CONTAINED"))
        .await;
    assert_eq!(
        sim.comments(&id).len(),
        100,
        "exactly at the limit, never past it"
    );
    assert!(last.contains("acknowledged"), "{last}");

    // A rerun on the full incident writes nothing; its answer has the truth.
    let mut again = body.clone();
    again["eventUniqueId"] = json!(uuid::Uuid::new_v4().to_string());
    let r2 = app.contain(&again).await;
    assert_ne!(r2["run_id"], r["run_id"]);
    app.drain().await;
    assert_eq!(sim.comments(&id).len(), 100);
    assert!(r2["outcome"].is_string());
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("result=\"skipped_incident_limit\""),
        "the skipped note is counted: {metrics}"
    );
}

/// A run writes at most `record.max_comments_per_run` notes; the last is
/// kept for the final truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_at_most_its_note_budget_and_the_last_is_the_truth() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.record.max_comments_per_run = 3;
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("ned@contoso.com", "c8000000-0000-4000-8000-000000000001");
    let phones: Vec<String> = (0..4)
        .map(|_| sim.add_device("ned@contoso.com", DeviceSpec::iphone()))
        .collect();
    let body = app
        .h
        .incident_body("rec-budget", 312, "High", &["ned@contoso.com"]);
    sim.add_incident(
        "rec-budget",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    let run = r["run_id"].as_str().unwrap().to_string();
    for (i, p) in phones.iter().enumerate() {
        sim.sync_device(p);
        wait_acks(&app, &run, i + 1).await;
        app.drain().await;
    }
    let notes = settled_notes(&app, "rec-budget", "CONTAINED", "budget").await;
    assert_eq!(notes.len(), 3, "{notes:#?}");
}

/// Where a tenant is configured for it, each note is also posted to the
/// Defender incident (Graph), and the number shown is the Defender one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_is_mirrored_to_the_defender_incident_where_configured() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.tenants[0].defender_mirror = true;
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("ola@contoso.com", "c9000000-0000-4000-8000-000000000001");
    let g = sim.add_device("ola@contoso.com", DeviceSpec::iphone());
    sim.set_defender_id("rec-mirror", "4711");
    let mut body = app
        .h
        .incident_body("rec-mirror", 313, "High", &["ola@contoso.com"]);
    body["object"]["properties"]["providerIncidentId"] = json!("4711");
    let r = app.contain(&body).await;
    assert_eq!(r["incident"]["defender_number"], "4711", "{r}");
    sim.sync_device(&g);
    let id = app.incident_id("rec-mirror");
    app.wait_note(&id, "the final truth", |t| t.starts_with("<p><b>CONTAINED"))
        .await;
    app.drain().await;
    // The Defender copy follows the Sentinel comment in the same task.
    app.eventually("both notes mirrored", || {
        sim.defender_view(&id)
            .iter()
            .filter(|c| c.source == "graph")
            .count()
            >= 2
    })
    .await;
    let view = sim.defender_view(&id);
    let from = |s: &str| {
        view.iter()
            .filter(|c| c.source == s)
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
    };
    let sentinel = from("sentinel");
    let graph = from("graph");
    assert_eq!(sentinel.len(), 2, "{view:#?}");
    assert_eq!(
        graph.len(),
        2,
        "each note once in the Defender incident: {view:#?}"
    );
    assert!(graph[0].starts_with("WAITING FOR PHONES"), "{}", graph[0]);
    assert!(graph[1].starts_with("CONTAINED"), "{}", graph[1]);
    assert!(
        graph[1].contains("incident 4711"),
        "the number analysts there see: {}",
        graph[1]
    );
    assert!(!graph[1].contains('<'), "plain text: {}", graph[1]);
    assert!(sentinel[0].contains("incident 4711"));
}
