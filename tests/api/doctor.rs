//! `wipehook doctor` against the simulated tenant, run as the operator runs
//! it (the binary, `--json`): a correct tenant passes every check and
//! nothing is written; each misconfiguration fails the right check, names
//! the fix and exits non-zero. And the canary inside the service.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wipehook::config::Settings;
use wipehook_sim::{DeviceSpec, PrincipalKind, SimOptions};

use crate::helpers::*;

const CANARY: &str = "canary@contoso.com";

/// The service on a simulated tenant with a canary mailbox and its phone.
async fn app_with(f: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.doctor.canary_upn = Some(CANARY.into());
        f(s)
    })
    .await
    .expect("app");
    app.h
        .sim
        .add_user(CANARY, "c0000000-0000-4000-8000-00000000ca11");
    app.h.sim.add_device(CANARY, DeviceSpec::iphone());
    app
}

/// Run `wipehook doctor --json` on these settings: (exit code, report).
fn doctor(app: &TestApp, settings: &Settings) -> (i32, Value) {
    let config = app
        .h
        .dir
        .join(format!("doctor-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config, toml::to_string(settings).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wipehook"))
        .arg("--config")
        .arg(&config)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn checks<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id)
        .collect()
}

/// The one check `id` (the first of its kind), asserted to have `status`.
fn check<'a>(report: &'a Value, id: &str, status: &str) -> &'a Value {
    let found = checks(report, id);
    let c = found
        .iter()
        .find(|c| c["status"] == status)
        .unwrap_or_else(|| panic!("no {status} {id} in {report:#}"));
    c
}

fn fix(c: &Value) -> &str {
    c["fix"].as_str().unwrap_or_default()
}

/// Nothing the doctor sent could change the tenant: only Get-* cmdlets,
/// only GETs to ARM and Graph, no comment.
fn assert_read_only(app: &TestApp) {
    let sim = &app.h.sim;
    for c in sim.exchange_calls() {
        assert!(c.cmdlet.starts_with("Get-"), "the doctor sent {}", c.cmdlet);
    }
    assert_safe(&sim.exchange_calls());
    for c in sim.arm_calls().iter().chain(sim.graph_calls().iter()) {
        assert_eq!(c.method, "GET", "the doctor sent {} {}", c.method, c.path);
    }
    assert_eq!(sim.comment_puts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_tenant_passes_every_check_and_nothing_is_written() {
    let app = app_with(|_| {}).await;
    let (code, report) = doctor(&app, &app.settings);
    assert_eq!(code, 0, "{report:#}");
    for c in report["checks"].as_array().unwrap() {
        let ok = c["status"] == "pass" || (c["id"] == "graph.security" && c["status"] == "skip");
        assert!(ok, "not a pass: {c:#}");
    }
    for id in [
        "config.valid",
        "config.cloud",
        "inbound.openid",
        "inbound.audience",
        "inbound.caller",
        "token.exchange",
        "token.arm",
        "token.graph",
        "exchange.mobile_device",
        "exchange.statistics",
        "exchange.rbac",
        "sentinel.workspace",
        "sentinel.incidents",
        "sentinel.role",
        "clock.skew",
        "store.schema",
        "store.write",
    ] {
        check(&report, id, "pass");
    }
    assert_eq!(
        checks(&report, "inbound.caller").len(),
        2,
        "one per allowed caller"
    );
    assert!(!app.h.sim.exchange_calls().is_empty());
    assert!(!app.h.sim.arm_calls().is_empty());
    assert_read_only(&app);
    // The checklist for a terminal says the same.
    let text = doctor_text(&app, &app.settings);
    eprintln!("{text}");
    assert!(
        text.contains("PASS  exchange.rbac") && text.contains("nothing failed"),
        "{text}"
    );
}

fn doctor_text(app: &TestApp, settings: &Settings) -> String {
    let config = app.h.dir.join("doctor-text.toml");
    std::fs::write(&config, toml::to_string(settings).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wipehook"))
        .arg("--config")
        .arg(&config)
        .arg("doctor")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
