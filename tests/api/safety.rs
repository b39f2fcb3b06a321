//! Safety interlocks and analyst control (safety issue): dry run, protected
//! and foreign users, minimum severity, blast radius and approval, hourly
//! budget, cancel, verification, hold expiry, device policy.

use std::time::Duration;

use serde_json::{Value, json};
use wipehook::config::Mode;
use wipehook::domain::Severity;
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::both_stores;
use crate::helpers::*;

fn user<'a>(r: &'a Value, upn: &str) -> &'a Value {
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == upn)
        .unwrap_or_else(|| panic!("{upn} in {r}"))
}

async fn comment_of(app: &TestApp, incident: &str) -> String {
    let id = app.incident_id(incident);
    app.eventually("comment", || !app.h.sim.comments(&id).is_empty())
        .await;
    app.h.sim.comments(&id)[0].message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_no_wipe_and_says_what_it_would_have_done() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.mode = Mode::DryRun
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("mia@contoso.com", "10000000-0000-4000-8000-000000000001");
    sim.add_device("mia@contoso.com", DeviceSpec::iphone());
    sim.add_device("mia@contoso.com", DeviceSpec::outlook());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-dry", 61, "High", &["mia@contoso.com"]),
        )
        .await;
    assert_eq!(r["mode"], "dry_run");
    assert_eq!(r["summary"]["would_request"], 2, "{r}");
    assert_eq!(r["summary"]["wipes_requested"], 0);
    assert!(r["reason"].as_str().unwrap().contains("dry run"));
    assert!(app.clears().is_empty(), "no Clear-MobileDevice in dry run");
    let html = comment_of(&app, "inc-dry").await;
    assert!(
        html.contains("DRY RUN") && html.contains("would have been requested"),
        "{html}"
    );
    // A per-call dry run on an enforcing service, too.
    let app = spawn_app().await;
    app.h
        .sim
        .add_user("mia@contoso.com", "10000000-0000-4000-8000-000000000001");
    app.h
        .sim
        .add_device("mia@contoso.com", DeviceSpec::iphone());
    let body = app
        .h
        .incident_body("inc-dry2", 62, "High", &["mia@contoso.com"]);
    let resp = app
        .post(
            "/api/v1/sentinel/incidents?mode=dry_run",
            Some(&app.h.run_token()),
            &body,
        )
        .await;
    let r = app
        .wait_done(resp.headers()["location"].to_str().unwrap())
        .await;
    assert_eq!(r["mode"], "dry_run");
    assert!(app.clears().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_and_foreign_users_are_never_wiped() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.protected_upns.push("*-admin@contoso.com".into())
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (u, id) in [
        ("breakglass@contoso.com", 1),
        ("ops-admin@contoso.com", 2),
        ("eve@fabrikam.com", 3),
        ("ok@contoso.com", 4),
    ] {
        sim.add_user(u, &format!("20000000-0000-4000-8000-00000000000{id}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let r = app
        .contain(&app.h.incident_body(
            "inc-prot",
            63,
            "High",
            &[
                "breakglass@contoso.com",
                "ops-admin@contoso.com",
                "eve@fabrikam.com",
                "ok@contoso.com",
            ],
        ))
        .await;
    assert_eq!(user(&r, "breakglass@contoso.com")["state"], "protected");
    assert_eq!(user(&r, "ops-admin@contoso.com")["state"], "protected");
    assert_eq!(user(&r, "eve@fabrikam.com")["state"], "refused");
    assert!(
        user(&r, "eve@fabrikam.com")["reason"]
            .as_str()
            .unwrap()
            .contains("allowed_domains")
    );
    assert_eq!(r["summary"]["wipes_requested"], 1);
    let mut touched: Vec<String> = sim
        .exchange_calls()
        .iter()
        .filter_map(|c| c.parameters["Mailbox"].as_str().map(String::from))
        .collect();
    touched.dedup();
    assert_eq!(
        touched,
        vec!["ok@contoso.com"],
        "Exchange never even asked about the others"
    );
    let html = comment_of(&app, "inc-prot").await;
    assert!(
        html.contains("protected account") && html.contains("not in policy.allowed_domains"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_below_the_minimum_severity_are_recorded_not_contained() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.min_severity = Some(Severity::Medium)
    })
    .await
    else {
        return;
    };
    app.h
        .sim
        .add_user("ned@contoso.com", "30000000-0000-4000-8000-000000000001");
    app.h
        .sim
        .add_device("ned@contoso.com", DeviceSpec::iphone());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-low", 64, "Low", &["ned@contoso.com"]),
        )
        .await;
    assert_eq!(r["status"], "skipped");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("below policy.min_severity")
    );
    assert!(app.h.sim.exchange_calls().is_empty());
    assert!(
        comment_of(&app, "inc-low")
            .await
            .contains("below policy.min_severity")
    );
    let r = app
        .contain(
            &app.h
                .incident_body("inc-high", 65, "High", &["ned@contoso.com"]),
        )
        .await;
    assert_eq!(r["summary"]["wipes_requested"], 1);
}

async fn held_then_approved(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    let users: Vec<String> = (0..11).map(|i| format!("wave{i}@contoso.com")).collect();
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("40000000-0000-4000-8000-0000000000{i:02}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = app.h.incident_body("inc-wave", 66, "High", &refs);
    sim.add_incident(
        "inc-wave",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["status"], "held", "{r}");
    assert_eq!(r["summary"]["held_users"], 11);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("max_targets_per_run")
    );
    assert!(app.clears().is_empty(), "nothing wiped while held");
    assert!(sim.exchange_calls().is_empty());
    let html = comment_of(&app, "inc-wave").await;
    assert!(
        html.starts_with("<p><b>HELD — NEEDS APPROVAL: nothing was wiped for 11 held users. To approve, run the playbook Wipehook-Approve-Run on this incident before "),
        "{html}"
    );
    let run_id = r["run_id"].as_str().unwrap();

    // The containment playbook's identity cannot approve.
    let denied = app
        .post(
            &format!("/api/v1/runs/{run_id}/approve"),
            Some(&app.h.run_token()),
            &json!({}),
        )
        .await;
    assert_eq!(denied.status().as_u16(), 401);
    // The approver playbook, run manually on the incident.
    let ok = app
        .post(
            "/api/v1/sentinel/incidents/approve",
            Some(&app.h.approver_token()),
            &body,
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{:?}", ok.text().await);
    let r = app
        .wait_done(&format!("{}/api/v1/runs/{run_id}", app.base))
        .await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["summary"]["wipes_requested"], 11);
    assert!(
        r["approved"]["by"]
            .as_str()
            .unwrap()
            .contains(wipehook::harness::APPROVER_OID)
    );
    let id = app.incident_id("inc-wave");
    let after = app
        .wait_note(&id, "a new note names the approver", |t| {
            t.contains("approved by") && t.contains(wipehook::harness::APPROVER_OID)
        })
        .await;
    assert!(after.starts_with("<p><b>WAITING FOR PHONES"), "{after}");
    let notes = app.notes(&id);
    assert_eq!(
        notes.len(),
        2,
        "the held note stays as written; a new one follows"
    );
    assert!(notes[0].contains("HELD — NEEDS APPROVAL"), "{notes:?}");
    // Approving again is a conflict, not a second round of wipes.
    let again = app
        .post(
            &format!("/api/v1/runs/{run_id}/approve"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(again.status().as_u16(), 409);
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    an_eleven_user_incident_is_held_until_approved,
    held_then_approved
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_wipes_nothing() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
        s.policy.hold_expiry = Duration::from_millis(800);
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (u, i) in [("o1@contoso.com", 1), ("o2@contoso.com", 2)] {
        sim.add_user(u, &format!("50000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let body = app
        .h
        .incident_body("inc-exp", 67, "High", &["o1@contoso.com", "o2@contoso.com"]);
    sim.add_incident(
        "inc-exp",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.contain(&body).await;
    assert_eq!(r["status"], "held");
    let run_id = r["run_id"].as_str().unwrap().to_string();
    let id = app.incident_id("inc-exp");
    app.eventually("comment says expired", || {
        sim.comments(&id)
            .iter()
            .any(|c| c.message.contains("expired"))
    })
    .await;
    let r = app.run(&run_id).await;
    assert_eq!(r["status"], "expired");
    assert_eq!(r["summary"]["expired_users"], 2);
    let late = app
        .post(
            &format!("/api/v1/runs/{run_id}/approve"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(late.status().as_u16(), 409);
    assert!(app.clears().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_budget_holds_wipes_beyond_it() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_wipes_per_hour = 2
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("p1@contoso.com", "60000000-0000-4000-8000-000000000001");
    sim.add_device("p1@contoso.com", DeviceSpec::iphone());
    sim.add_device("p1@contoso.com", DeviceSpec::outlook());
    sim.add_user("p2@contoso.com", "60000000-0000-4000-8000-000000000002");
    sim.add_device("p2@contoso.com", DeviceSpec::iphone());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-b1", 68, "High", &["p1@contoso.com"]),
        )
        .await;
    assert_eq!(r["summary"]["wipes_requested"], 2);
    let r = app
        .contain(
            &app.h
                .incident_body("inc-b2", 69, "High", &["p2@contoso.com"]),
        )
        .await;
    assert_eq!(r["status"], "held", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("max_wipes_per_hour"));
    assert_eq!(app.successful_clears().len(), 2);
    let run_id = r["run_id"].as_str().unwrap();
    let ok = app
        .post(
            &format!("/api/v1/runs/{run_id}/approve"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(ok.status().as_u16(), 202);
    let r = app
        .wait_done(&format!("{}/api/v1/runs/{run_id}", app.base))
        .await;
    assert_eq!(
        r["summary"]["wipes_requested"], 1,
        "approved beyond the budget"
    );
}

async fn cancel_only_unacknowledged(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("quinn@contoso.com", "70000000-0000-4000-8000-000000000001");
    let acked = sim.add_device("quinn@contoso.com", DeviceSpec::iphone());
    let pending = sim.add_device("quinn@contoso.com", DeviceSpec::outlook());
    let body = app
        .h
        .incident_body("inc-undo", 70, "High", &["quinn@contoso.com"]);
    let r = app.contain(&body).await;
    let run_id = r["run_id"].as_str().unwrap().to_string();
    sim.sync_device(&acked);
    // The follow-up sees the acknowledgement before the analyst cancels.
    let started = std::time::Instant::now();
    while app.run(&run_id).await["summary"]["acknowledged"] != 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "ack not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = app
        .post(
            "/api/v1/sentinel/incidents/cancel",
            Some(&app.h.approver_token()),
            &body,
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{:?}", ok.text().await);
    app.eventually("cancel sent", || {
        sim.device(&pending).unwrap().cancel_count == 1
    })
    .await;
    let id = app.incident_id("inc-undo");
    let last = app
        .wait_note(&id, "a note records the cancellation", |t| {
            t.starts_with("<p><b>CANCELLED by")
        })
        .await;
    assert!(
        last.contains(
            "1 wipe cancelled before the phone received it; 1 wipe was already acknowledged"
        ),
        "{last}"
    );
    assert!(
        !last.contains("CONTAINED:"),
        "a cancelled run is never contained: {last}"
    );
    assert_eq!(
        sim.device(&acked).unwrap().cancel_count,
        0,
        "an acknowledged wipe is not cancelled"
    );
    let cancels: Vec<_> = sim
        .exchange_calls()
        .into_iter()
        .filter(|c| c.parameters.get("Cancel") == Some(&Value::Bool(true)))
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].parameters["Identity"], pending.as_str());
    let r = app.run(&run_id).await;
    let devs = r["users"][0]["devices"].as_array().unwrap();
    let by = |g: &str| devs.iter().find(|d| d["guid"] == g).unwrap().clone();
    assert_eq!(by(&pending)["outcome"], "cancelled");
    assert_eq!(by(&acked)["outcome"], "requested");
    assert!(by(&acked)["acknowledged_at"].is_string());
    assert!(
        r["cancelled"]["by"]
            .as_str()
            .unwrap()
            .contains(wipehook::harness::APPROVER_OID)
    );
    // A later run may wipe the cancelled device again.
    let again = app
        .contain(
            &app.h
                .incident_body("inc-undo2", 71, "High", &["quinn@contoso.com"]),
        )
        .await;
    let devs = again["users"][0]["devices"].as_array().unwrap();
    assert_eq!(
        devs.iter().find(|d| d["guid"] == pending.as_str()).unwrap()["outcome"],
        "requested"
    );
    assert_eq!(
        devs.iter().find(|d| d["guid"] == acked.as_str()).unwrap()["outcome"],
        "already_requested"
    );
}
both_stores!(
    cancel_sends_cancel_only_for_unacknowledged_wipes,
    cancel_only_unacknowledged
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comment_follows_a_wipe_from_requested_to_acknowledged() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("rita@contoso.com", "80000000-0000-4000-8000-000000000001");
    let g = sim.add_device("rita@contoso.com", DeviceSpec::iphone());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-ack", 72, "High", &["rita@contoso.com"]),
        )
        .await;
    let id = app.incident_id("inc-ack");
    let first = app
        .wait_note(&id, "the requested note", |t| {
            t.contains("waiting for the phone")
        })
        .await;
    assert!(first.starts_with("<p><b>WAITING FOR PHONES"), "{first}");
    assert!(
        !first.contains("acknowledged the wipe") && !first.contains("CONTAINED:"),
        "never reported done before the device acknowledged: {first}"
    );
    sim.sync_device(&g);
    let last = app
        .wait_note(&id, "the acknowledged note", |t| {
            t.starts_with("<p><b>CONTAINED")
        })
        .await;
    assert!(last.contains("acknowledged the wipe at"), "{last}");
    let notes = app.notes(&id);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[0], first, "the first note is never rewritten");
    let r = app.run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(r["users"][0]["devices"][0]["verification"], "acknowledged");
    assert!(
        sim.exchange_calls()
            .iter()
            .any(|c| c.cmdlet == "Get-MobileDeviceStatistics"
                && c.parameters["Mailbox"] == "rita@contoso.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_gives_up_at_the_deadline_and_says_still_pending() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.verify_deadline = Duration::from_millis(600)
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("sam@contoso.com", "80000000-0000-4000-8000-000000000002");
    sim.add_device("sam@contoso.com", DeviceSpec::iphone());
    app.contain(
        &app.h
            .incident_body("inc-late", 73, "High", &["sam@contoso.com"]),
    )
    .await;
    let id = app.incident_id("inc-late");
    let last = app
        .wait_note(&id, "not acknowledged at the deadline", |t| {
            t.contains("did not acknowledge by its deadline")
        })
        .await;
    assert!(
        last.starts_with("<p><b>NOT CONTAINED — NEEDS YOU: 1 of 1 user (sam@contoso.com)."),
        "a wipe still pending at its deadline leaves mail on the phone: {last}"
    );
    assert!(
        last.contains("Set-CASMailbox -ActiveSyncBlockedDeviceIDs"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_policy_reports_outlook_and_eas_distinctly_and_limits_client_types() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.client_types = vec!["Outlook".into(), "REST".into()]
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("tina@contoso.com", "90000000-0000-4000-8000-000000000001");
    let eas = sim.add_device("tina@contoso.com", DeviceSpec::iphone());
    let outlook = sim.add_device("tina@contoso.com", DeviceSpec::outlook());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-ct", 74, "High", &["tina@contoso.com"]),
        )
        .await;
    let devs = r["users"][0]["devices"].as_array().unwrap();
    let by = |g: &str| devs.iter().find(|d| d["guid"] == g).unwrap().clone();
    assert_eq!(by(&eas)["outcome"], "skipped");
    assert!(
        by(&eas)["reason"]
            .as_str()
            .unwrap()
            .contains("client_types")
    );
    assert_eq!(by(&outlook)["outcome"], "requested");
    assert!(
        by(&outlook)["notes"][0]
            .as_str()
            .unwrap()
            .contains("all of the user's devices running Outlook")
    );

    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("uma@contoso.com", "90000000-0000-4000-8000-000000000002");
    let android = sim.add_device("uma@contoso.com", DeviceSpec::android_native_eas());
    let old = sim.add_device("uma@contoso.com", DeviceSpec::old_eas());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-android", 75, "High", &["uma@contoso.com"]),
        )
        .await;
    let devs = r["users"][0]["devices"].as_array().unwrap();
    let by = |g: &str| devs.iter().find(|d| d["guid"] == g).unwrap().clone();
    assert_eq!(by(&android)["outcome"], "requested");
    assert!(by(&android)["notes"].to_string().contains("native Android"));
    assert_eq!(by(&old)["outcome"], "skipped");
    assert!(
        !sim.device(&old).unwrap().full_wipe_requested
            && sim.device(&old).unwrap().wipe_request_count == 0
    );
    assert!(
        comment_of(&app, "inc-android")
            .await
            .contains("native Android")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_policy_overrides_the_global_one() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.tenants[0].policy.mode = Some(Mode::DryRun);
        s.tenants[0].policy.allowed_domains = Some(vec!["fabrikam.com".into()]);
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("ann@fabrikam.com", "b1000000-0000-4000-8000-000000000001");
    sim.add_device("ann@fabrikam.com", DeviceSpec::iphone());
    sim.add_user("bo@contoso.com", "b1000000-0000-4000-8000-000000000002");
    let r = app
        .contain(&app.h.incident_body(
            "inc-tenant",
            76,
            "High",
            &["ann@fabrikam.com", "bo@contoso.com"],
        ))
        .await;
    assert_eq!(r["mode"], "dry_run");
    assert_eq!(
        user(&r, "ann@fabrikam.com")["devices"][0]["outcome"],
        "would_request"
    );
    assert_eq!(
        user(&r, "bo@contoso.com")["state"],
        "refused",
        "the tenant's allowed domains replace the global list"
    );
    assert!(app.clears().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_stops_the_wipes_not_yet_sent() {
    let Some(app) = spawn_with(
        SimOptions {
            latency: Duration::from_millis(400),
            ..Default::default()
        },
        StoreKind::Sqlite,
        |s| {
            s.worker.exchange_initial_concurrency = 1;
            s.worker.exchange_max_concurrency = 1;
        },
    )
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (u, i) in [
        ("c1@contoso.com", 1),
        ("c2@contoso.com", 2),
        ("c3@contoso.com", 3),
    ] {
        sim.add_user(u, &format!("d1000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let body = app.h.incident_body(
        "inc-stop",
        77,
        "High",
        &["c1@contoso.com", "c2@contoso.com", "c3@contoso.com"],
    );
    sim.add_incident(
        "inc-stop",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app.post_incident(&body).await;
    let run_id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Cancel while the first user's devices are being listed.
    app.eventually("the first listing started", || {
        sim.exchange_calls()
            .iter()
            .any(|c| c.cmdlet == "Get-MobileDevice")
    })
    .await;
    let c = app
        .post(
            &format!("/api/v1/runs/{run_id}/cancel"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(c.status().as_u16(), 202);
    let result = app
        .wait_done(&format!("{}/api/v1/runs/{run_id}", app.base))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        app.successful_clears().is_empty(),
        "nothing sent after the cancel: {:?}",
        app.clears()
    );
    let states: Vec<&str> = result["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert!(
        states.iter().all(|s| *s == "cancelled" || *s == "done"),
        "{result}"
    );
    assert!(states.contains(&"cancelled"));
}
