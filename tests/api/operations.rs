//! Operability: health, readiness, metrics, request ids, shutdown, and the
//! operator CLI (check-config, runs, replay).

use std::process::Command;

use serde_json::Value;
use wipehook_sim::{DeviceSpec, Fault};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_request_ids() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()["x-request-id"].is_empty(),
        "a request id is made when none is given"
    );

    let sim = &app.h.sim;
    sim.add_user("vic@contoso.com", "a1000000-0000-4000-8000-000000000001");
    sim.add_device("vic@contoso.com", DeviceSpec::iphone());
    sim.fail_next_exchange(1, Fault::Status(503));
    app.contain(
        &app.h
            .incident_body("inc-metrics", 81, "High", &["vic@contoso.com"]),
    )
    .await;
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "wipehook_runs{",
        "wipehook_runs_accepted_total{",
        "wipehook_device_outcomes_total{outcome=\"requested\"}",
        "wipehook_upstream_request_duration_seconds_bucket{",
        "wipehook_upstream_retries_total{",
        "wipehook_queue_depth ",
        "wipehook_oldest_pending_work_seconds ",
        "wipehook_held_runs ",
        "wipehook_exchange_concurrency_limit{",
        "wipehook_exchange_calls_in_flight{",
    ] {
        assert!(text.contains(family), "metrics lack {family}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_refuses_new_calls_with_503() {
    let app = spawn_app().await;
    app.running().shared.begin_shutdown();
    let r = app
        .post_incident(&app.h.incident_body("inc-stop", 82, "High", &[]))
        .await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "shutting_down"
    );
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}

fn cli(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wipehook"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_check_config_runs_and_replay() {
    let app = spawn_app().await;
    app.h
        .sim
        .add_user("wes@contoso.com", "a2000000-0000-4000-8000-000000000001");
    app.h
        .sim
        .add_device("wes@contoso.com", DeviceSpec::iphone());
    let body = app.h.incident_body(
        "inc-cli",
        83,
        "High",
        &[
            "wes@contoso.com",
            "breakglass@contoso.com",
            "x@fabrikam.com",
        ],
    );
    let result = app.contain(&body).await;
    let run_id = result["run_id"].as_str().unwrap();

    let mut settings = app.settings.clone();
    settings.store.url = app.settings.store.url.clone();
    let config = app.h.dir.join("cli.toml");
    std::fs::write(&config, toml::to_string(&settings).unwrap()).unwrap();

    let (ok, out, err) = cli(&["check-config"], &config);
    assert!(ok, "{err}");
    assert!(
        out.contains("[policy]") && out.contains("exchange_url"),
        "{out}"
    );
    assert!(
        !out.contains(&app.h.sim.client_secret()),
        "the secret never printed"
    );
    assert!(err.contains("is set"));

    let (ok, out, _) = cli(&["runs", "list"], &config);
    assert!(ok && out.contains(run_id) && out.contains("#83"), "{out}");
    let (ok, out, _) = cli(&["runs", "show", run_id], &config);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["run_id"], run_id);

    let file = app.h.dir.join("body.json");
    std::fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
    let calls = app.h.sim.exchange_calls().len();
    let (ok, out, err) = cli(&["replay", file.to_str().unwrap()], &config);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<(String, String)> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["upn"].as_str().unwrap().into(),
                t["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(states.contains(&("wes@contoso.com".into(), "pending".into())));
    assert!(states.contains(&("breakglass@contoso.com".into(), "protected".into())));
    assert!(states.contains(&("x@fabrikam.com".into(), "refused".into())));
    assert_eq!(
        app.h.sim.exchange_calls().len(),
        calls,
        "replay calls no Exchange"
    );

    // A bad configuration is named, and exits non-zero.
    let bad = app.h.dir.join("bad.toml");
    std::fs::write(&bad, "[policy]\nmode = \"yolo\"\n").unwrap();
    let (ok, _, err) = cli(&["check-config"], &bad);
    assert!(!ok && err.contains("yolo"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_finished_runs_and_old_delivery_keys() {
    let app = spawn_app().await;
    app.h
        .sim
        .add_user("old@contoso.com", "a3000000-0000-4000-8000-000000000001");
    app.h.sim.add_incident("inc-old", serde_json::json!([]));
    let body = app
        .h
        .incident_body("inc-old", 84, "High", &["old@contoso.com"]);
    let result = app.contain(&body).await;
    let run_id = wipehook::domain::RunId::parse(result["run_id"].as_str().unwrap()).unwrap();
    let incident = app.incident_id("inc-old");
    app.eventually("comment written", || {
        !app.h.sim.comments(&incident).is_empty()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let store = &app.running().shared.store;
    // Within retention: kept.
    assert_eq!(
        store
            .prune(
                std::time::Duration::from_secs(3600),
                std::time::Duration::from_secs(3600)
            )
            .await
            .unwrap(),
        (0, 0)
    );
    assert!(store.run(&run_id).await.unwrap().is_some());
    // Past retention: the run and its delivery key go; a redelivery is a new run.
    let (runs, _) = store
        .prune(std::time::Duration::ZERO, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(runs, 1);
    assert!(store.run(&run_id).await.unwrap().is_none());
    let again = app.contain(&body).await;
    assert_ne!(again["run_id"].as_str().unwrap(), run_id.as_str());
}
