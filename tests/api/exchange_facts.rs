//! Exchange as it really answers (the simulated tenant changed first):
//! `DeviceID` in the statistics, acknowledgements in either field, warnings
//! on writes, a cancel with nothing pending, plain and cmdlet HTTP 500s.

use std::time::Duration;

use serde_json::Value;
use wipehook_sim::{DeviceSpec, Fault, SimOptions};

use crate::both_stores;
use crate::helpers::*;

fn device<'a>(r: &'a Value, guid: &str) -> &'a Value {
    r["users"][0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["guid"] == guid)
        .unwrap_or_else(|| panic!("{guid} in {r}"))
}

async fn acknowledged(app: &TestApp, run_id: &str, guid: &str) -> bool {
    let r = app.run(run_id).await;
    device(&r, guid)["verification"] == "acknowledged"
}

async fn acknowledgements_are_read_as_exchange_reports_them(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("una@contoso.com", "90000000-0000-4000-8000-000000000001");
    // 1. The statistics name the device by another Guid: matched by DeviceID.
    let by_device_id = sim.add_device("una@contoso.com", DeviceSpec::iphone());
    sim.update_device(&by_device_id, |d| {
        d.statistics_guid = Some("0ddba11-0000-4000-8000-000000000001".into())
    });
    // 2. The account-only acknowledgement reported in DeviceWipeAckTime.
    let in_full_field = sim.add_device("una@contoso.com", DeviceSpec::iphone());
    sim.update_device(&in_full_field, |d| d.ack_in_full_wipe_field = true);
    // 3. Only an acknowledgement of an earlier wipe: not acknowledged.
    let stale_only = sim.add_device("una@contoso.com", DeviceSpec::iphone());
    sim.update_device(&stale_only, |d| {
        d.stale_ack = Some(time::OffsetDateTime::now_utc() - time::Duration::days(30))
    });
    // 4. An old acknowledgement in one field and this wipe's in the other.
    let both = sim.add_device("una@contoso.com", DeviceSpec::outlook());
    sim.update_device(&both, |d| {
        d.stale_ack = Some(time::OffsetDateTime::now_utc() - time::Duration::days(30))
    });
    let r = app
        .contain(
            &app.h
                .incident_body("inc-ack-fields", 90, "High", &["una@contoso.com"]),
        )
        .await;
    let run_id = r["run_id"].as_str().unwrap().to_string();
    for g in [&by_device_id, &in_full_field, &both] {
        sim.sync_device(g);
    }
    for g in [&by_device_id, &in_full_field, &both] {
        let started = std::time::Instant::now();
        while !acknowledged(&app, &run_id, g).await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{g} acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = app.run(&run_id).await;
    assert_eq!(
        device(&r, &stale_only)["verification"],
        "pending",
        "an earlier wipe's acknowledgement does not count: {r}"
    );
    assert!(device(&r, &stale_only)["acknowledged_at"].is_null());
    // The statistics really spelled it DeviceID.
    assert!(
        sim.exchange_calls()
            .iter()
            .any(|c| c.cmdlet == "Get-MobileDeviceStatistics")
    );
}
both_stores!(
    acknowledgements_are_read_as_exchange_reports_them_,
    acknowledgements_are_read_as_exchange_reports_them
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_nothing_pending_is_never_reported_as_cancelled() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("vic@contoso.com", "90000000-0000-4000-8000-000000000002");
    let g = sim.add_device("vic@contoso.com", DeviceSpec::iphone());
    let body = app
        .h
        .incident_body("inc-nothing", 91, "High", &["vic@contoso.com"]);
    let r = app.contain(&body).await;
    let run_id = r["run_id"].as_str().unwrap().to_string();
    // Exchange no longer holds the request (it went, or never arrived), but
    // the statistics do not show an acknowledgement either.
    sim.update_device(&g, |d| d.wipe_requested_at = None);
    let ok = app
        .post(
            &format!("/api/v1/runs/{run_id}/cancel"),
            Some(&app.h.approver_token()),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(ok.status().as_u16(), 202, "{:?}", ok.text().await);
    app.drain().await;
    app.eventually("the cancel was sent", || {
        sim.exchange_calls()
            .iter()
            .any(|c| c.parameters.get("Cancel") == Some(&Value::Bool(true)))
    })
    .await;
    let started = std::time::Instant::now();
    loop {
        let r = app.run(&run_id).await;
        let d = device(&r, &g);
        if d["notes"].as_array().unwrap().iter().any(|n| {
            n.as_str()
                .unwrap()
                .contains("not cancelled: nothing pending")
        }) {
            assert_ne!(d["outcome"], "cancelled", "{d}");
            assert_eq!(r["summary"]["cancelled"], 0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let incident = app.incident_id("inc-nothing");
    app.eventually("the record says so", || {
        sim.comments(&incident)
            .iter()
            .any(|c| c.message.contains("not cancelled: nothing pending"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_500_is_retried_and_a_cmdlet_error_is_not() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("wes@contoso.com", "90000000-0000-4000-8000-000000000003");
    let g = sim.add_device("wes@contoso.com", DeviceSpec::iphone());
    // Two plain 500s on the device list, then it answers.
    sim.fail_next_cmdlet("Get-MobileDevice", 2, Fault::PlainStatus(500));
    let r = app
        .contain(
            &app.h
                .incident_body("inc-500", 92, "High", &["wes@contoso.com"]),
        )
        .await;
    assert_eq!(device(&r, &g)["outcome"], "requested", "{r}");
    let lists: Vec<u16> = sim
        .exchange_calls()
        .iter()
        .filter(|c| c.cmdlet == "Get-MobileDevice")
        .map(|c| c.response_status)
        .collect();
    assert_eq!(lists, vec![500, 500, 200]);

    // A cmdlet's own error, also as HTTP 500: final at once, and said so.
    sim.add_user("xia@contoso.com", "90000000-0000-4000-8000-000000000004");
    sim.add_device("xia@contoso.com", DeviceSpec::iphone());
    let before = sim.exchange_calls().len();
    sim.fail_next_cmdlet(
        "Get-MobileDevice",
        1,
        Fault::CmdletError {
            status: 500,
            exception: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
                .into(),
            text: "The operation couldn't be performed because object 'xia' couldn't be found."
                .into(),
        },
    );
    let r = app
        .contain(
            &app.h
                .incident_body("inc-500b", 93, "High", &["xia@contoso.com"]),
        )
        .await;
    let u = &r["users"][0];
    assert_eq!(u["state"], "failed", "{r}");
    assert!(
        u["reason"].as_str().unwrap().contains("the cmdlet failed"),
        "{u}"
    );
    let lists = sim.exchange_calls()[before..]
        .iter()
        .filter(|c| c.cmdlet == "Get-MobileDevice")
        .count();
    assert_eq!(lists, 1, "a cmdlet error is not retried");
    assert_safe(&sim.exchange_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_eas_phone_is_said_to_be_unreachable_since_march_2026() {
    let app = spawn_app().await;
    let sim = &app.h.sim;
    sim.add_user("yan@contoso.com", "90000000-0000-4000-8000-000000000005");
    let old = sim.add_device("yan@contoso.com", DeviceSpec::old_eas());
    let r = app
        .contain(
            &app.h
                .incident_body("inc-eas", 94, "High", &["yan@contoso.com"]),
        )
        .await;
    let d = device(&r, &old);
    assert_eq!(d["outcome"], "skipped");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 March 2026") && reason.contains("never be delivered"),
        "{reason}"
    );
}
