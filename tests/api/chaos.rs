//! When Microsoft misbehaves (issue 12): the simulated tenant's seeded
//! faults against the real service, on SQLite and PostgreSQL. Bounds are
//! generous (a loaded 2-core box); the figures themselves are the
//! benchmark's (`wipehook bench --scenario faults`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use wipehook_sim::{DeviceSpec, Fault, FaultRule, Service};

use crate::both_stores;
use crate::exactly_once::{
    TestAppRef, process_harness, start_process, tid, wait_healthy, write_config,
};
use crate::helpers::*;
use wipehook::domain::WipeState;

fn device_outcome(report: &Value, guid: &str) -> Option<String> {
    report["users"].as_array()?.iter().find_map(|u| {
        u["devices"]
            .as_array()?
            .iter()
            .find(|d| d["guid"] == guid)
            .and_then(|d| d["outcome"].as_str().map(str::to_string))
    })
}

/// Issue 12, defects 1 and 4: one device's wipe is accepted while the
/// other's hangs; the process is killed -9 in that window. The accepted
/// wipe was recorded when its answer arrived, so the restarted process
/// sends only the other one. On SQLite the restart takes the dead process's
/// lease back at once (the lease is a minute here); on PostgreSQL the lease
/// runs out first (replicas may share the database).
async fn kill_between_two_wipes(store: StoreKind) {
    let Some((h, mut settings)) = process_harness(store).await else {
        return;
    };
    settings.store.lease = match store {
        StoreKind::Sqlite => Duration::from_secs(60),
        StoreKind::Postgres => Duration::from_secs(3),
    };
    let sim = &h.sim;
    let upn = "kira@contoso.com";
    sim.add_user(upn, "f2000000-0000-4000-8000-000000000001");
    let fast_phone = sim.add_device(upn, DeviceSpec::iphone());
    let slow_phone = sim.add_device(upn, DeviceSpec::outlook());
    // The slow phone's first wipe hangs for a long while.
    sim.add_fault_rule(
        FaultRule::always(Service::Exchange, Fault::Hang { ms: 20_000 })
            .call("Clear-MobileDevice")
            .subject(&slow_phone)
            .limit(1),
    );
    let body = h.incident_body("inc-kill", 41, "High", &[upn]);
    sim.add_incident(
        "inc-kill",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let config = write_config(&h.dir, "kill", &settings);
    let mut a = start_process(&h.dir, "first", &config);
    wait_healthy(&a).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/sentinel/incidents", a.base))
        .bearer_auth(h.run_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let run_id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Wait until the run's report shows the fast phone's wipe requested.
    let started = Instant::now();
    loop {
        let rep: Value = client
            .get(format!("{}/api/v1/runs/{run_id}", a.base))
            .bearer_auth(h.run_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if device_outcome(&rep, &fast_phone).as_deref() == Some("requested") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the accepted wipe is recorded while the other still hangs: {rep}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slow_sends = |sim: &wipehook_sim::SimTenant| -> Vec<(u16, SystemTime)> {
        sim.exchange_calls()
            .into_iter()
            .filter(|c| {
                c.cmdlet == "Clear-MobileDevice"
                    && c.parameters.get("Cancel").is_none()
                    && c.parameters["Identity"] == slow_phone.as_str()
            })
            .map(|c| (c.response_status, c.at))
            .collect()
    };
    let before = slow_sends(sim);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, 0, "the slow phone's wipe is still in flight");
    assert_eq!(sim.device(&fast_phone).unwrap().wipe_request_count, 1);
    let killed_at = SystemTime::now();
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    let mut b = start_process(&h.dir, "second", &config);
    wait_healthy(&b).await;
    let restarted = Instant::now();
    let result = TestAppRef { h: &h }.wait(&b.base, &run_id).await;
    assert_eq!(result["status"], "completed", "{result}");
    b.child.kill().unwrap();
    let _ = b.child.wait();

    assert_eq!(
        sim.device(&fast_phone).unwrap().wipe_request_count,
        1,
        "the accepted wipe was not sent again"
    );
    let after = slow_sends(sim);
    assert!(after.len() >= 2, "the lost one was sent again: {after:?}");
    let resent_at = after[1].1;
    match store {
        // A one-minute lease did not hold the restart back.
        StoreKind::Sqlite => assert!(
            restarted.elapsed() < Duration::from_secs(45),
            "the restart reclaimed the lease"
        ),
        // The dead replica's lease (renewed a second before the kill at
        // the latest) ran out first.
        StoreKind::Postgres => assert!(
            resent_at.duration_since(killed_at).unwrap_or_default() >= Duration::from_secs(1),
            "PostgreSQL keeps lease expiry"
        ),
    }
    let store = wipehook::store::Store::connect(&settings.store)
        .await
        .unwrap();
    let ledger = store.ledger(&tid(&sim.tenant_id())).await.unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(ledger.iter().all(|r| r.state == WipeState::Requested));
    assert_eq!(result["summary"]["wipes_requested"], 2, "{result}");
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    an_accepted_wipe_is_not_sent_again_after_a_kill,
    kill_between_two_wipes
);
