//! Issue 13: wipehook must not become the attacker's wipe button. The
//! destructive budget is reserved atomically (never overshot by one run's
//! users, by concurrent runs, or by the whole service), the kill switch
//! stops a storm with nothing lost, approvals follow the two-person rule,
//! and a caller of one tenant can neither act on, read nor approve another
//! tenant's work.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use wipehook::config::{Config, CredentialSettings, TenantSettings};
use wipehook::harness::{APPROVER_OID, AUDIENCE, PLAYBOOK_OID, SECRET_ENV};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::both_stores;
use crate::helpers::{StoreKind, TestApp, assert_safe, spawn_with};

fn users(app: &TestApp, prefix: &str, n: usize, devices: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let upn = format!("{prefix}{i}@contoso.com");
            app.h.sim.add_user(
                &upn,
                &format!("9{:07x}-0000-4000-8000-{:012x}", prefix.len(), i + 1),
            );
            for d in 0..devices {
                let spec = if d % 2 == 0 {
                    DeviceSpec::iphone()
                } else {
                    DeviceSpec::outlook()
                };
                app.h.sim.add_device(&upn, spec);
            }
            upn
        })
        .collect()
}

fn held_reasons(r: &Value) -> Vec<String> {
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["state"] == "held")
        .map(|u| u["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Successful account-only wipe requests per device.
fn wipes_per_device(app: &TestApp) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for c in app.successful_clears() {
        let id = c.parameters["Identity"].as_str().unwrap().to_string();
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

async fn one_run_many_users(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |s| {
        s.policy.max_wipes_per_hour = 5;
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "many", 4, 2);
    let refs: Vec<&str> = upns.iter().map(String::as_str).collect();
    let r = app
        .contain(&app.h.incident_body("inc-many", 1301, "High", &refs))
        .await;
    let sent = app.successful_clears().len();
    // Each user's wipes are reserved together: two users (4 wipes) fit, a
    // third (2 more) would pass 5.
    assert_eq!(sent, 4, "never more than the budget: {r}");
    assert_eq!(r["status"], "held", "{r}");
    let held = held_reasons(&r);
    assert_eq!(held.len(), 2, "{r}");
    for why in &held {
        assert!(
            why.contains("policy.max_wipes_per_hour") && why.contains("nothing was sent"),
            "{why}"
        );
    }
    assert_safe(&app.h.sim.exchange_calls());
}
both_stores!(
    the_budget_is_never_overshot_by_one_run_with_many_users,
    one_run_many_users
);

async fn concurrent_runs(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |s| {
        s.policy.max_wipes_per_hour = 3;
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "conc", 6, 1);
    let posts = upns.iter().enumerate().map(|(i, u)| {
        let body = app
            .h
            .incident_body(&format!("inc-conc-{i}"), 1310 + i as i64, "High", &[u]);
        let app = &app;
        async move {
            let r = app.post_incident(&body).await;
            assert_eq!(r.status().as_u16(), 202);
            r.headers()["location"].to_str().unwrap().to_string()
        }
    });
    let locations = futures_util::future::join_all(posts).await;
    app.drain().await;
    let mut held = 0;
    for l in &locations {
        let r = app.wait_done(l).await;
        if r["status"] == "held" {
            held += 1;
        }
    }
    assert_eq!(
        app.successful_clears().len(),
        3,
        "exactly the budget, never more"
    );
    assert_eq!(held, 3);
}
both_stores!(
    the_budget_is_never_overshot_by_concurrent_runs,
    concurrent_runs
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_wide_budget_counts_every_tenant_together() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_wipes_per_hour = 100;
        s.guard.max_wipes_per_hour = 2;
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "svc", 3, 1);
    let refs: Vec<&str> = upns.iter().map(String::as_str).collect();
    let r = app
        .contain(&app.h.incident_body("inc-svc", 1320, "High", &refs))
        .await;
    assert_eq!(app.successful_clears().len(), 2);
    let held = held_reasons(&r);
    assert_eq!(held.len(), 1);
    assert!(held[0].contains("guard.max_wipes_per_hour"), "{}", held[0]);
}

async fn kill_switch(app: &TestApp, engaged: bool, token: &str) -> reqwest::Response {
    app.post(
        "/api/v1/kill-switch",
        Some(token),
        &json!({"engaged": engaged, "reason": "suspected stolen playbook identity"}),
    )
    .await
}

async fn storm_stopped(store: StoreKind) {
    let Some(app) = spawn_with(
        SimOptions {
            latency: Duration::from_millis(120),
            ..Default::default()
        },
        store,
        |s| {
            s.policy.max_wipes_per_hour = 1000;
            s.worker.exchange_initial_concurrency = 2;
            s.worker.exchange_max_concurrency = 2;
        },
    )
    .await
    else {
        return;
    };
    let upns = users(&app, "storm", 12, 2);
    let mut runs = vec![];
    for (i, u) in upns.iter().enumerate() {
        let r = app
            .post_incident(&app.h.incident_body(
                &format!("inc-storm-{i}"),
                1330 + i as i64,
                "High",
                &[u],
            ))
            .await;
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        runs.push(v["run_id"].as_str().unwrap().to_string());
    }
    app.eventually("the storm's first wipe", || {
        !app.successful_clears().is_empty()
    })
    .await;
    // A token without the approver role cannot throw it.
    assert_eq!(
        kill_switch(&app, true, &app.h.run_token())
            .await
            .status()
            .as_u16(),
        401
    );
    let r = kill_switch(&app, true, &app.h.approver_token()).await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["engaged"], true);
    assert_eq!(v["changed"], true);
    app.drain().await;
    // Nothing lost: every run is final, held ones say why.
    let mut held = vec![];
    for id in &runs {
        let r = app
            .wait_done(&format!("{}/api/v1/runs/{id}", app.base))
            .await;
        if r["status"] == "held" {
            for why in held_reasons(&r) {
                assert!(why.contains("kill switch engaged by"), "{why}");
                assert!(why.contains("suspected stolen playbook identity"), "{why}");
            }
            held.push(id.clone());
        }
    }
    let stopped_at = app.successful_clears().len();
    assert!(
        stopped_at < 24,
        "the storm was stopped mid-way ({stopped_at} of 24)"
    );
    assert!(!held.is_empty(), "stopped at {stopped_at}: {:?}", {
        let mut v = vec![];
        for id in &runs {
            let r = app.run(id).await;
            v.push(format!(
                "{} {} {:?}",
                r["status"], r["summary"]["wipes_requested"], r["users"][0]["reason"]
            ));
        }
        v
    });
    // Readiness and metrics show it; the record of a held incident says so.
    let ready: Value = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["kill_switch"]["engaged"], true, "{ready}");
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
        metrics.contains("wipehook_kill_switch_engaged 1"),
        "{metrics}"
    );
    let last = upns.len() - 1;
    let note = app
        .wait_note(
            &app.incident_id(&format!("inc-storm-{last}")),
            "kill switch",
            |t| t.contains("kill switch"),
        )
        .await;
    assert!(note.contains("nothing was sent"), "{note}");
    // Approving while it is engaged is refused; lifting needs the role.
    let a = app
        .post(
            &format!("/api/v1/runs/{}/approve", held[0]),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(a.status().as_u16(), 409);
    assert_eq!(
        a.json::<Value>().await.unwrap()["error"]["code"],
        "kill_switch_engaged"
    );
    assert_eq!(
        kill_switch(&app, false, &app.h.run_token())
            .await
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        kill_switch(&app, false, &app.h.approver_token())
            .await
            .status()
            .as_u16(),
        200
    );
    // Lifted: held work waits for approval, nothing is sent by itself.
    app.drain().await;
    assert_eq!(app.successful_clears().len(), stopped_at);
    for id in &held {
        let a = app
            .post(
                &format!("/api/v1/runs/{id}/approve"),
                Some(&app.h.approver_token()),
                &json!({}),
            )
            .await;
        assert_eq!(a.status().as_u16(), 202, "{:?}", a.text().await);
    }
    app.drain().await;
    for id in &runs {
        let r = app
            .wait_done(&format!("{}/api/v1/runs/{id}", app.base))
            .await;
        assert_eq!(r["summary"]["wipes_requested"], 2, "{r}");
    }
    let per_device = wipes_per_device(&app);
    assert_eq!(per_device.len(), 24, "every device wiped in the end");
    assert!(
        per_device.values().all(|n| *n == 1),
        "none twice: {per_device:?}"
    );
    // The audit trail has both throws of the switch and the approvals.
    let audit: Value = app
        .client
        .get(format!("{}/api/v1/audit", app.base))
        .bearer_auth(app.h.approver_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "kill_switch_engaged",
        "kill_switch_lifted",
        "approval_refused",
        "approved",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert_safe(&app.h.sim.exchange_calls());
}
both_stores!(
    the_kill_switch_stops_a_storm_and_nothing_is_lost,
    storm_stopped
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_in_the_configuration_cannot_be_lifted_by_a_call() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.guard.kill_switch = true;
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "cfgks", 1, 1);
    let r = app
        .contain(&app.h.incident_body("inc-cfgks", 1350, "High", &[&upns[0]]))
        .await;
    assert_eq!(r["status"], "held", "{r}");
    assert!(held_reasons(&r)[0].contains("guard.kill_switch = true"));
    assert!(app.clears().is_empty());
    let lift = kill_switch(&app, false, &app.h.approver_token()).await;
    assert_eq!(lift.status().as_u16(), 409);
}

const SECOND_APPROVER: &str = "5e4d3c2b-1a09-4f8e-9d7c-6b5a49382716";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_that_caused_a_run_cannot_approve_it() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "selfap", 2, 1);
    // A playbook identity that holds both roles (a mis-scoped assignment).
    let both = app.h.sim.playbook_token(
        AUDIENCE,
        PLAYBOOK_OID,
        &["Containment.Run", "Containment.Approve"],
    );
    let body = app
        .h
        .incident_body("inc-self", 1360, "High", &[&upns[0], &upns[1]]);
    app.h.sim.add_incident(
        "inc-self",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let r = app
        .post("/api/v1/sentinel/incidents", Some(&both), &body)
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = app.wait_done(&location).await["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = app
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            Some(&both),
            &json!({}),
        )
        .await;
    assert_eq!(
        a.status().as_u16(),
        403,
        "{:?} {}",
        a.text().await,
        app.run(&id).await
    );
    let e: Value = a.json().await.unwrap();
    assert_eq!(e["error"]["code"], "self_approval", "{e}");
    app.drain().await;
    assert!(app.clears().is_empty());
    let a = app
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(a.status().as_u16(), 202);
    app.drain().await;
    app.eventually("both wiped", || app.successful_clears().len() == 2)
        .await;
    let audit: Value = app
        .client
        .get(format!("{}/api/v1/audit?run={id}", app.base))
        .bearer_auth(app.h.approver_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval_refused")
        .expect("the refusal is on the audit trail");
    assert_eq!(refused["actor_oid"], PLAYBOOK_OID);
    assert!(refused["detail"].as_str().unwrap().contains("two-person"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_needs_two_distinct_approvers() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
        s.policy.two_person_above = Some(2);
        s.inbound.allowed_callers.push(SECOND_APPROVER.into());
    })
    .await
    else {
        return;
    };
    let upns = users(&app, "twop", 3, 1);
    let refs: Vec<&str> = upns.iter().map(String::as_str).collect();
    let r = app
        .contain(&app.h.incident_body("inc-twop", 1370, "High", &refs))
        .await;
    assert_eq!(r["status"], "held");
    let id = r["run_id"].as_str().unwrap().to_string();
    let approve = |token: String| {
        let app = &app;
        let id = id.clone();
        async move {
            let a = app
                .post(
                    &format!("/api/v1/runs/{id}/approve"),
                    Some(&token),
                    &json!({}),
                )
                .await;
            assert_eq!(a.status().as_u16(), 202);
            a.json::<Value>().await.unwrap()
        }
    };
    let first = approve(app.h.approver_token()).await;
    assert_eq!(first["status"], "held", "{first}");
    assert_eq!(first["approvals"], 1);
    assert_eq!(first["approvals_needed"], 2);
    // The same approver twice is still one approver.
    let again = approve(app.h.approver_token()).await;
    assert_eq!(again["status"], "held");
    assert_eq!(again["approvals"], 1);
    app.drain().await;
    assert!(
        app.clears().is_empty(),
        "nothing before the second approver"
    );
    let second_token =
        app.h
            .sim
            .playbook_token(AUDIENCE, SECOND_APPROVER, &["Containment.Approve"]);
    let second = approve(second_token).await;
    assert_eq!(second["status"], "running", "{second}");
    assert_eq!(second["approvals"], 2);
    app.drain().await;
    let r = app
        .wait_done(&format!("{}/api/v1/runs/{id}", app.base))
        .await;
    assert_eq!(app.successful_clears().len(), 3);
    assert_eq!(r["approvals"].as_array().unwrap().len(), 2, "{r}");
}

const TENANT_B: &str = "b0b0b0b0-0000-4000-8000-00000000000b";
const TENANT_C: &str = "c0c0c0c0-0000-4000-8000-00000000000c";
const B_PLAYBOOK: &str = "b1111111-0000-4000-8000-0000000000b1";
const B_APPROVER: &str = "b2222222-0000-4000-8000-0000000000b2";
const C_APPROVER: &str = "c2222222-0000-4000-8000-0000000000c2";

fn workspace(name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/{name}",
        wipehook_sim::SUBSCRIPTION_ID
    )
}

fn foreign_tenant(id: &str, ws: &str, callers: &[&str]) -> TenantSettings {
    TenantSettings {
        id: id.into(),
        workspaces: vec![workspace(ws)],
        credential: CredentialSettings::ClientSecret {
            client_id: "00000000-0000-4000-8000-0000000000aa".into(),
            client_secret_env: SECRET_ENV.into(),
        },
        policy: Default::default(),
        defender_mirror: false,
        canary_upn: None,
        allowed_callers: callers.iter().map(|c| c.to_string()).collect(),
    }
}

/// An incident of workspace `ws` (the simulated tenant's incident shape).
fn in_workspace(mut body: Value, ws: &str) -> Value {
    let id = body["object"]["id"]
        .as_str()
        .unwrap()
        .replace("/workspaces/soc-ws/", &format!("/workspaces/{ws}/"));
    body["object"]["id"] = json!(id);
    body["workspaceInfo"]["WorkspaceName"] = json!(ws);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_one_tenant_cannot_act_on_read_or_approve_another_tenants_work() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1;
        s.inbound.allowed_callers.clear();
        s.tenants[0].allowed_callers = vec![PLAYBOOK_OID.into(), APPROVER_OID.into()];
        s.tenants
            .push(foreign_tenant(TENANT_B, "ws-b", &[B_PLAYBOOK, B_APPROVER]));
        s.tenants
            .push(foreign_tenant(TENANT_C, "ws-c", &[C_APPROVER]));
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_foreign_tenant(TENANT_B);
    sim.add_foreign_tenant(TENANT_C);
    let b_run = sim.playbook_token_in(TENANT_B, AUDIENCE, B_PLAYBOOK, &["Containment.Run"]);
    let b_appr = sim.playbook_token_in(TENANT_B, AUDIENCE, B_APPROVER, &["Containment.Approve"]);
    let c_appr = sim.playbook_token_in(TENANT_C, AUDIENCE, C_APPROVER, &["Containment.Approve"]);
    let upns = users(&app, "iso", 2, 1);
    let a_body = app
        .h
        .incident_body("inc-iso-a", 1380, "High", &[&upns[0], &upns[1]]);
    sim.add_incident(
        "inc-iso-a",
        a_body["object"]["properties"]["relatedEntities"].clone(),
    );
    // Tenant A's run, held for approval (two users, blast radius 1).
    let r = app.post_incident(&a_body).await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let a_id = app.wait_done(&location).await["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // B's playbook cannot act on A's workspace, even with A's incident.
    let r = app
        .post("/api/v1/sentinel/incidents", Some(&b_run), &a_body)
        .await;
    assert_eq!(r.status().as_u16(), 403, "{:?}", r.text().await);
    // A caller is allowed for its own tenant only: A's object ids in a
    // token issued by B, and B's in a token issued by A, are refused.
    let a_oid_in_b = sim.playbook_token_in(TENANT_B, AUDIENCE, PLAYBOOK_OID, &["Containment.Run"]);
    let r = app
        .post(
            "/api/v1/sentinel/incidents",
            Some(&a_oid_in_b),
            &in_workspace(a_body.clone(), "ws-b"),
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
    let b_oid_in_a = sim.playbook_token(AUDIENCE, B_PLAYBOOK, &["Containment.Run"]);
    let r = app
        .post("/api/v1/sentinel/incidents", Some(&b_oid_in_a), &a_body)
        .await;
    assert_eq!(r.status().as_u16(), 401);
    // A's run does not exist for B: read, approve, cancel, incident paths.
    for token in [&b_appr, &c_appr] {
        let get = app
            .client
            .get(format!("{}/api/v1/runs/{a_id}", app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 404);
        for path in [
            format!("/api/v1/runs/{a_id}/approve"),
            format!("/api/v1/runs/{a_id}/cancel"),
        ] {
            let r = app.post(&path, Some(token), &json!({})).await;
            assert_eq!(r.status().as_u16(), 404, "{path}");
        }
        for path in [
            "/api/v1/sentinel/incidents/approve",
            "/api/v1/sentinel/incidents/cancel",
        ] {
            let r = app.post(path, Some(token), &a_body).await;
            assert_eq!(r.status().as_u16(), 404, "{path}");
        }
    }
    // B's own run in B's workspace: visible to B, not to A or C.
    let b_body = in_workspace(
        app.h.incident_body(
            "inc-iso-b",
            1381,
            "High",
            &["x1@fabrikam.com", "x2@fabrikam.com"],
        ),
        "ws-b",
    );
    let r = app
        .post("/api/v1/sentinel/incidents", Some(&b_run), &b_body)
        .await;
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let b_id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for token in [app.h.approver_token(), c_appr.clone()] {
        let r = app
            .post(
                &format!("/api/v1/runs/{b_id}/approve"),
                Some(&token),
                &json!({}),
            )
            .await;
        assert_eq!(r.status().as_u16(), 404);
    }
    // A's approver approves A's run; the audit trail of B does not show it.
    let r = app
        .post(
            &format!("/api/v1/runs/{a_id}/approve"),
            Some(&app.h.approver_token()),
            &json!({}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let audit: Value = app
        .client
        .get(format!("{}/api/v1/audit", app.base))
        .bearer_auth(&b_appr)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["run_id"] != json!(a_id)),
        "{audit}"
    );
    let r = app
        .client
        .get(format!("{}/api/v1/audit?run={a_id}", app.base))
        .bearer_auth(&b_appr)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v["entries"].as_array().unwrap().is_empty(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_and_workspaces_are_bound_to_one_tenant_in_the_configuration() {
    let h = wipehook::harness::Harness::start(SimOptions::default())
        .await
        .unwrap();
    // Several tenants: a global caller list names callers without their tenant.
    let mut s = h.settings();
    s.tenants
        .push(foreign_tenant(TENANT_B, "ws-b", &[B_PLAYBOOK]));
    let e = Config::new(s).unwrap_err();
    assert!(e.contains("allowed_callers"), "{e}");
    // One workspace under two tenants.
    let mut s = h.settings();
    s.inbound.allowed_callers.clear();
    s.tenants[0].allowed_callers = vec![PLAYBOOK_OID.into()];
    s.tenants
        .push(foreign_tenant(TENANT_B, "soc-ws", &[B_PLAYBOOK]));
    let e = Config::new(s).unwrap_err();
    assert!(e.contains("two tenants"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_tenant_that_threw_the_kill_switch_may_lift_it() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.inbound.allowed_callers.clear();
        s.tenants[0].allowed_callers = vec![PLAYBOOK_OID.into(), APPROVER_OID.into()];
        s.tenants
            .push(foreign_tenant(TENANT_B, "ws-b", &[B_PLAYBOOK, B_APPROVER]));
    })
    .await
    else {
        return;
    };
    app.h.sim.add_foreign_tenant(TENANT_B);
    let b_appr =
        app.h
            .sim
            .playbook_token_in(TENANT_B, AUDIENCE, B_APPROVER, &["Containment.Approve"]);
    assert_eq!(
        kill_switch(&app, true, &app.h.approver_token())
            .await
            .status()
            .as_u16(),
        200
    );
    // Tenant B sees that it is engaged, not who threw it or why.
    let seen: Value = app
        .client
        .get(format!("{}/api/v1/kill-switch", app.base))
        .bearer_auth(&b_appr)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["engaged"], true);
    assert_eq!(seen["by"], "an approver of another tenant");
    assert!(seen["reason"].is_null());
    let r = kill_switch(&app, false, &b_appr).await;
    assert_eq!(r.status().as_u16(), 409, "another tenant cannot lift it");
    assert_eq!(
        kill_switch(&app, false, &app.h.approver_token())
            .await
            .status()
            .as_u16(),
        200
    );
}
