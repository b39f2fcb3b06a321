//! Issue 16: containment beyond the wipe. Devices are triaged before
//! anything is done (suspected attacker, stale, EAS below 16.1, Outlook,
//! normal); suspected attacker devices are wiped and blocked at once; the
//! account steps (revoke sessions, block sign-in, confirm compromised) run in
//! the tenant's order, with the same safety as the wipe, and a cancel undoes
//! what can be undone.

use std::time::Duration;

use serde_json::{Value, json};
use wipehook::config::Settings;
use wipehook::domain::{AccountStep, ContainmentOrder};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::helpers::{StoreKind, TestApp, spawn_with};

fn steps(s: &mut Settings) {
    s.policy.account_steps = vec![
        AccountStep::RevokeSessions,
        AccountStep::BlockSignIn,
        AccountStep::ConfirmCompromised,
    ];
}

async fn app_with(f: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        steps(s);
        f(s)
    })
    .await
    .expect("app")
}

fn user<'a>(r: &'a Value, upn: &str) -> &'a Value {
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == upn)
        .unwrap_or_else(|| panic!("no user {upn} in {r}"))
}

fn device<'a>(r: &'a Value, guid: &str) -> &'a Value {
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["devices"].as_array().unwrap())
        .find(|d| d["guid"] == guid)
        .unwrap_or_else(|| panic!("no device {guid} in {r}"))
}

fn step<'a>(r: &'a Value, upn: &str, name: &str) -> &'a Value {
    user(r, upn)["account_steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} for {upn} in {r}"))
}

fn graph_writes(app: &TestApp) -> Vec<String> {
    app.h
        .sim
        .graph_calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

/// An incident whose alerts began `minutes_ago`.
fn incident(app: &TestApp, name: &str, n: i64, upns: &[&str], minutes_ago: i64) -> Value {
    let mut body = app.h.incident_body(name, n, "High", upns);
    let began = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    body["object"]["properties"]["firstActivityTimeUtc"] = json!(
        began
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    app.h.sim.add_incident(
        name,
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    body
}

async fn run_of(app: &TestApp, id: &str) -> Value {
    app.wait_done(&format!("{}/api/v1/runs/{id}", app.base))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_is_triaged_and_an_attacker_device_is_wiped_and_blocked() {
    let app = app_with(|s| s.policy.account_steps.clear()).await;
    let sim = &app.h.sim;
    let upn = "tri@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000001");
    let normal = sim.add_device(upn, DeviceSpec::iphone());
    let outlook = sim.add_device(upn, DeviceSpec::outlook());
    let stale = sim.add_device(upn, DeviceSpec::iphone());
    let attacker = sim.add_device(upn, DeviceSpec::iphone());
    let now = time::OffsetDateTime::now_utc();
    sim.update_device(&stale, |d| {
        d.last_success_sync = Some(now - time::Duration::days(40))
    });
    // Paired 20 minutes ago, after the incident began (2 hours ago).
    sim.update_device(&attacker, |d| {
        d.first_sync_time = now - time::Duration::minutes(20)
    });
    let attacker_id = sim.device(&attacker).unwrap().device_id;
    let r = app
        .contain(&incident(&app, "inc-tri", 1601, &[upn], 120))
        .await;
    assert_eq!(device(&r, &normal)["triage"], "normal", "{r}");
    assert_eq!(device(&r, &outlook)["triage"], "outlook_rest");
    assert_eq!(device(&r, &stale)["triage"], "stale");
    assert!(
        device(&r, &stale)["triage_reason"]
            .as_str()
            .unwrap()
            .contains("never land")
    );
    assert_eq!(
        device(&r, &stale)["outcome"],
        "requested",
        "a stale phone is still wiped"
    );
    let a = device(&r, &attacker);
    assert_eq!(a["triage"], "suspected_attacker");
    assert!(
        a["triage_reason"]
            .as_str()
            .unwrap()
            .contains("first synced")
    );
    assert_eq!(a["outcome"], "requested", "wiped first");
    app.eventually("the attacker device is blocked", || {
        sim.blocked_device_ids(upn).contains(&attacker_id)
    })
    .await;
    app.drain().await;
    let r = app.run(r["run_id"].as_str().unwrap()).await;
    assert!(device(&r, &attacker)["blocked_at"].is_string(), "{r}");
    assert_eq!(
        sim.blocked_device_ids(upn),
        vec![attacker_id.clone()],
        "only that device"
    );
    // Blocked: it can never fetch anything again; the partnership stays.
    sim.sync_device(&attacker);
    assert!(sim.device(&attacker).unwrap().wipe_acked_at.is_none());
    let note = app
        .wait_note(&app.incident_id("inc-tri"), "blocked", |t| {
            t.contains("blocked")
        })
        .await;
    assert!(note.contains("suspected attacker device"), "{note}");
    // The set was added to, never replaced.
    let sets: Vec<_> = sim
        .exchange_calls()
        .into_iter()
        .filter(|c| c.cmdlet == "Set-CASMailbox")
        .collect();
    assert_eq!(sets.len(), 1);
    assert_eq!(
        sets[0].parameters["ActiveSyncBlockedDeviceIDs"]["add"],
        attacker_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_first_waits_for_the_phones_then_cuts_the_account_off() {
    let app = app_with(|s| s.policy.account_steps_after = Duration::from_secs(600)).await;
    let sim = &app.h.sim;
    let upn = "wf@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000002");
    let phone = sim.add_device(upn, DeviceSpec::iphone());
    let r = app
        .contain(&incident(&app, "inc-wf", 1602, &[upn], 60))
        .await;
    let id = r["run_id"].as_str().unwrap().to_string();
    assert!(
        user(&r, upn)["account_steps"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );
    assert!(graph_writes(&app).is_empty(), "nothing before the phone");
    // The phone syncs: the wipe lands, and the account steps follow at once.
    sim.sync_device(&phone);
    app.eventually("the account is cut off", || {
        sim.account(upn) == Some((false, true, true))
    })
    .await;
    app.drain().await;
    let r = run_of(&app, &id).await;
    assert_eq!(user(&r, upn)["outcome"], "contained", "{r}");
    for s in ["revoke_sessions", "block_sign_in", "confirm_compromised"] {
        assert_eq!(step(&r, upn, s)["state"], "done", "{s}: {r}");
    }
    let order: Vec<String> = graph_writes(&app);
    assert!(order[0].ends_with("/revokeSignInSessions"), "{order:?}");
    assert!(order[1].starts_with("PATCH"), "{order:?}");
    assert!(order[2].ends_with("/confirmCompromised"), "{order:?}");
    let note = app
        .wait_note(&app.incident_id("inc-wf"), "account steps", |t| {
            t.contains("sign-in block")
        })
        .await;
    assert!(note.contains("sign-in sessions revoked"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contain_first_cuts_the_account_off_at_once_and_an_unsynced_phone_never_gets_its_wipe() {
    let app = app_with(|s| s.policy.containment_order = ContainmentOrder::ContainFirst).await;
    let sim = &app.h.sim;
    let upn = "cf@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000003");
    let phone = sim.add_device(upn, DeviceSpec::iphone());
    let r = app
        .contain(&incident(&app, "inc-cf", 1603, &[upn], 60))
        .await;
    let id = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(sim.account(upn), Some((false, true, true)), "at once");
    assert_eq!(device(&r, &phone)["outcome"], "requested", "then the wipe");
    let writes = graph_writes(&app);
    let first_clear = sim
        .exchange_calls()
        .iter()
        .position(|c| c.cmdlet == "Clear-MobileDevice")
        .unwrap();
    assert_eq!(writes.len(), 3);
    assert!(first_clear > 0);
    // The phone tries to sync: Exchange refuses the account's tokens (CAE),
    // so the pending wipe is never delivered.
    sim.sync_device(&phone);
    assert!(sim.device(&phone).unwrap().wipe_acked_at.is_none());
    assert!(sim.refused_syncs() >= 1);
    let r = run_of(&app, &id).await;
    assert_ne!(user(&r, upn)["outcome"], "contained", "{r}");
    let note = app
        .wait_note(&app.incident_id("inc-cf"), "cut off", |t| {
            t.contains("cut off")
        })
        .await;
    assert!(note.contains("may never receive it"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_phones_do_not_hold_the_account_steps_back_and_the_wait_is_bounded() {
    let app = app_with(|s| s.policy.account_steps_after = Duration::from_millis(500)).await;
    let sim = &app.h.sim;
    // Only a stale phone: the steps run at once.
    sim.add_user("st@contoso.com", "a1600000-0000-4000-8000-000000000004");
    let old = sim.add_device("st@contoso.com", DeviceSpec::iphone());
    let now = time::OffsetDateTime::now_utc();
    sim.update_device(&old, |d| {
        d.last_success_sync = Some(now - time::Duration::days(60))
    });
    // An active phone that never syncs: the steps run at account_steps_after.
    sim.add_user("slow@contoso.com", "a1600000-0000-4000-8000-000000000005");
    sim.add_device("slow@contoso.com", DeviceSpec::iphone());
    app.contain(&incident(
        &app,
        "inc-st",
        1604,
        &["st@contoso.com", "slow@contoso.com"],
        60,
    ))
    .await;
    app.eventually("the stale user's account is cut off", || {
        sim.account("st@contoso.com").is_some_and(|a| !a.0)
    })
    .await;
    app.eventually("the slow user's account, after the bounded wait", || {
        sim.account("slow@contoso.com").is_some_and(|a| !a.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_every_step_and_a_protected_user_gets_none() {
    let app = app_with(|s| s.policy.mode = wipehook::config::Mode::DryRun).await;
    let sim = &app.h.sim;
    let upn = "dry16@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000006");
    let attacker = sim.add_device(upn, DeviceSpec::iphone());
    let now = time::OffsetDateTime::now_utc();
    sim.update_device(&attacker, |d| {
        d.first_sync_time = now - time::Duration::minutes(5)
    });
    sim.add_user(
        "breakglass@contoso.com",
        "a1600000-0000-4000-8000-000000000007",
    );
    sim.add_device("breakglass@contoso.com", DeviceSpec::iphone());
    let r = app
        .contain(&incident(
            &app,
            "inc-dry16",
            1605,
            &[upn, "breakglass@contoso.com"],
            60,
        ))
        .await;
    let id = r["run_id"].as_str().unwrap().to_string();
    app.drain().await;
    let r = run_of(&app, &id).await;
    for s in ["revoke_sessions", "block_sign_in", "confirm_compromised"] {
        assert_eq!(step(&r, upn, s)["state"], "would_do", "{s}: {r}");
    }
    assert!(
        user(&r, "breakglass@contoso.com")["account_steps"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(graph_writes(&app).is_empty(), "a dry run writes nothing");
    assert!(
        sim.exchange_calls()
            .iter()
            .all(|c| c.cmdlet != "Set-CASMailbox")
    );
    assert_eq!(sim.account(upn), Some((true, false, false)));
    let note = app
        .wait_note(&app.incident_id("inc-dry16"), "would be blocked", |t| {
            t.contains("would be blocked")
        })
        .await;
    assert!(note.contains("dry run: would be done"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_never_repeated_by_a_later_run_unless_forced() {
    let app = app_with(|s| {
        s.policy.account_steps = vec![AccountStep::RevokeSessions];
        s.policy.account_steps_after = Duration::ZERO;
    })
    .await;
    let sim = &app.h.sim;
    let upn = "again@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000008");
    sim.add_device(upn, DeviceSpec::iphone());
    let revokes = |app: &TestApp| {
        graph_writes(app)
            .iter()
            .filter(|w| w.ends_with("/revokeSignInSessions"))
            .count()
    };
    let r1 = app
        .contain(&incident(&app, "inc-ag1", 1606, &[upn], 60))
        .await;
    app.eventually("revoked once", || revokes(&app) == 1).await;
    app.drain().await;
    let r2 = app
        .contain(&incident(&app, "inc-ag2", 1607, &[upn], 60))
        .await;
    let id2 = r2["run_id"].as_str().unwrap().to_string();
    app.drain().await;
    let r2 = run_of(&app, &id2).await;
    let s = step(&r2, upn, "revoke_sessions");
    assert_eq!(s["state"], "already_done", "{r2}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains(r1["run_id"].as_str().unwrap())
    );
    assert_eq!(revokes(&app), 1, "not repeated");
    // A forced rerun repeats it.
    let body = incident(&app, "inc-ag3", 1608, &[upn], 60);
    let r = app
        .post(
            "/api/v1/sentinel/incidents?force=true",
            Some(&app.h.run_token()),
            &body,
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    app.drain().await;
    app.eventually("revoked again", || revokes(&app) == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_undoes_what_wipehook_did_and_only_that() {
    let app = app_with(|s| s.policy.containment_order = ContainmentOrder::ContainFirst).await;
    let sim = &app.h.sim;
    let upn = "undo16@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-000000000009");
    let attacker = sim.add_device(upn, DeviceSpec::iphone());
    let now = time::OffsetDateTime::now_utc();
    sim.update_device(&attacker, |d| {
        d.first_sync_time = now - time::Duration::minutes(5)
    });
    // An administrator's own block, which wipehook must leave alone.
    sim.set_blocked_device_ids(upn, &["ADMINBLOCKED1"]);
    let attacker_id = sim.device(&attacker).unwrap().device_id;
    let r = app
        .contain(&incident(&app, "inc-undo16", 1609, &[upn], 60))
        .await;
    let id = r["run_id"].as_str().unwrap().to_string();
    app.eventually("blocked", || {
        sim.blocked_device_ids(upn).contains(&attacker_id)
    })
    .await;
    assert_eq!(sim.account(upn), Some((false, true, true)));
    let c = app
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(c.status().as_u16(), 202);
    app.drain().await;
    app.eventually("re-enabled", || sim.account(upn).is_some_and(|a| a.0))
        .await;
    app.eventually("its block removed", || {
        sim.blocked_device_ids(upn) == vec!["ADMINBLOCKED1".to_string()]
    })
    .await;
    app.drain().await;
    let r = run_of(&app, &id).await;
    assert_eq!(step(&r, upn, "block_sign_in")["state"], "undone", "{r}");
    assert!(
        step(&r, upn, "revoke_sessions")["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be restored")
    );
    assert_eq!(
        sim.account(upn).unwrap().1,
        true,
        "revoked sessions stay revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_disruption_is_noted_and_an_account_it_disabled_is_never_re_enabled() {
    let app = app_with(|s| s.policy.containment_order = ContainmentOrder::ContainFirst).await;
    let sim = &app.h.sim;
    let upn = "ad@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-00000000000a");
    sim.add_device(upn, DeviceSpec::iphone());
    sim.set_account_enabled(upn, false); // Defender disabled it
    sim.set_p2(false);
    let mut body = incident(&app, "inc-ad", 1610, &[upn], 60);
    body["object"]["properties"]["title"] = json!("Ransomware activity (attack disruption)");
    let r = app.contain(&body).await;
    let id = r["run_id"].as_str().unwrap().to_string();
    app.drain().await;
    let r = run_of(&app, &id).await;
    assert_eq!(r["attack_disruption"], true);
    let b = step(&r, upn, "block_sign_in");
    assert_eq!(b["state"], "skipped", "{r}");
    assert!(b["reason"].as_str().unwrap().contains("attack disruption"));
    let c = step(&r, upn, "confirm_compromised");
    assert_eq!(c["state"], "skipped");
    assert!(c["reason"].as_str().unwrap().contains("Entra ID P2"));
    assert_eq!(step(&r, upn, "revoke_sessions")["state"], "done");
    let c = app
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(c.status().as_u16(), 202);
    app.drain().await;
    assert_eq!(sim.account(upn).unwrap().0, false, "never re-enabled");
    let note = app
        .wait_note(&app.incident_id("inc-ad"), "attack disruption", |t| {
            t.contains("attack disruption acted")
        })
        .await;
    assert!(note.contains("never re-enables"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_account_is_named_and_graph_throttling_is_honoured() {
    let app = app_with(|s| {
        s.policy.account_steps = vec![AccountStep::BlockSignIn];
        s.policy.containment_order = ContainmentOrder::ContainFirst;
    })
    .await;
    let sim = &app.h.sim;
    let upn = "sync16@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-00000000000b");
    sim.add_device(upn, DeviceSpec::iphone());
    sim.set_on_premises_synced(upn);
    let body = incident(&app, "inc-sync16", 1611, &[upn], 60);
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    // Resolve the person first, then throttle the account write once.
    app.eventually("the person is resolved", || !sim.graph_calls().is_empty())
        .await;
    sim.fail_next_graph(1, 429);
    app.drain().await;
    let r = app.wait_done(&loc).await;
    let s = step(&r, upn, "block_sign_in");
    assert_eq!(s["state"], "done", "{r}");
    assert!(s["reason"].as_str().unwrap().contains("on-premises"));
    assert_eq!(sim.account(upn).unwrap().0, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_the_account_steps_too() {
    // contain_first: the user is held with the reason, nothing taken.
    let app = app_with(|s| s.policy.containment_order = ContainmentOrder::ContainFirst).await;
    let sim = &app.h.sim;
    let upn = "ks16@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-00000000000c");
    sim.add_device(upn, DeviceSpec::iphone());
    let r = app
        .post(
            "/api/v1/kill-switch",
            Some(&app.h.approver_token()),
            &json!({"engaged": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .contain(&incident(&app, "inc-ks16", 1612, &[upn], 60))
        .await;
    assert_eq!(user(&r, upn)["state"], "held", "{r}");
    assert!(
        user(&r, upn)["reason"]
            .as_str()
            .unwrap()
            .contains("kill switch")
    );
    assert!(graph_writes(&app).is_empty(), "no account step");
    assert!(app.successful_clears().is_empty());
    assert_eq!(sim.account(upn), Some((true, false, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_named_twice_gets_each_step_once_and_a_cancel_leaves_a_block_another_run_relies_on()
 {
    let app = app_with(|s| {
        s.policy.account_steps = vec![AccountStep::RevokeSessions, AccountStep::BlockSignIn];
        s.policy.containment_order = ContainmentOrder::ContainFirst;
    })
    .await;
    let sim = &app.h.sim;
    let upn = "twice@contoso.com";
    sim.add_user(upn, "a1600000-0000-4000-8000-00000000000d");
    sim.add_proxy_address(upn, "t.wice@contoso.com");
    sim.add_device(upn, DeviceSpec::iphone());
    let writes = |app: &TestApp, tail: &str| {
        graph_writes(app)
            .iter()
            .filter(|w| w.ends_with(tail) || w.starts_with(tail))
            .count()
    };
    // One run naming the same person by two addresses.
    let r1 = app
        .contain(&incident(
            &app,
            "inc-tw1",
            1613,
            &[upn, "t.wice@contoso.com"],
            60,
        ))
        .await;
    let id1 = r1["run_id"].as_str().unwrap().to_string();
    app.drain().await;
    assert_eq!(
        writes(&app, "/revokeSignInSessions"),
        1,
        "{:?}",
        graph_writes(&app)
    );
    assert_eq!(writes(&app, "PATCH"), 1);
    // A second run relies on the first one's block.
    let r2 = app
        .contain(&incident(&app, "inc-tw2", 1614, &[upn], 60))
        .await;
    let id2 = r2["run_id"].as_str().unwrap().to_string();
    app.drain().await;
    let r2 = run_of(&app, &id2).await;
    assert_eq!(
        step(&r2, upn, "block_sign_in")["state"],
        "already_done",
        "{r2}"
    );
    // Cancelling the first run does not lift a block the second relies on.
    let c = app
        .post(
            &format!("/api/v1/runs/{id1}/cancel"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(c.status().as_u16(), 202);
    let started = std::time::Instant::now();
    let (r1, b) = loop {
        app.drain().await;
        let r1 = run_of(&app, &id1).await;
        let b = [upn, "t.wice@contoso.com"]
            .iter()
            .flat_map(|u| user(&r1, u)["account_steps"].as_array().unwrap().clone())
            .find(|s| s["step"] == "block_sign_in" && s["state"] == "done")
            .expect("one of the two took the block");
        if b["reason"].as_str().unwrap().contains("cancel")
            || started.elapsed() > Duration::from_secs(10)
        {
            break (r1, b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("relies on this block"),
        "{r1}"
    );
    assert_eq!(sim.account(upn).unwrap().0, false, "still blocked");
    assert_eq!(writes(&app, "PATCH"), 1, "no re-enable");
}
