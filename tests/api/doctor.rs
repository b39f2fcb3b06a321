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
use wipehook::harness::{APPROVER_OID, PLAYBOOK_OID};

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
        let ok = c["status"] == "pass"
            || (["graph.security", "graph.account_steps"]
                .contains(&c["id"].as_str().unwrap_or(""))
                && c["status"] == "skip");
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

/// Doctor on a fresh correct tenant, then `break_it`, then doctor again:
/// the report, after asserting a non-zero exit.
async fn broken(
    settings: impl FnOnce(&mut Settings),
    break_it: impl FnOnce(&wipehook_sim::SimTenant),
) -> (TestApp, Value) {
    let app = app_with(|_| {}).await;
    let mut s = app.settings.clone();
    settings(&mut s);
    break_it(&app.h.sim);
    let (code, report) = doctor(&app, &s);
    assert_eq!(code, 1, "a failure exits 1: {report:#}");
    assert_eq!(report["ok"], false);
    assert_read_only(&app);
    (app, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_app_role_of_wipehooks_identity_is_named_with_its_grant() {
    let (_app, r) = broken(|_| {}, |sim| sim.revoke_app_role("Exchange.ManageAsApp")).await;
    let c = check(&r, "token.exchange", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("Exchange.ManageAsApp is missing"),
        "{c:#}"
    );
    assert!(
        fix(c).contains("/appRoleAssignments")
            && fix(c).contains("dc50a0fb-09a3-484d-be87-e023b12c6440"),
        "{c:#}"
    );
    assert!(
        fix(c).contains("00000002-0000-0ff1-ce00-000000000000"),
        "{c:#}"
    );
    // Exchange itself refuses (403) and the doctor says why.
    let c = check(&r, "exchange.mobile_device", "fail");
    assert!(fix(c).contains("Exchange.ManageAsApp"), "{c:#}");

    let (_app, r) = broken(|_| {}, |sim| sim.revoke_app_role("User.Read.All")).await;
    let c = check(&r, "token.graph", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("User.Read.All is missing"),
        "{c:#}"
    );
    assert!(
        fix(c).contains("df021288-bdef-4463-88db-98f22de89214"),
        "{c:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sentinel_responder_role_is_named_with_its_az_line() {
    let (app, r) = broken(
        |_| {},
        |sim| sim.revoke_azure_role("Microsoft Sentinel Responder"),
    )
    .await;
    let c = check(&r, "sentinel.role", "fail");
    assert!(
        fix(c).contains("az role assignment create")
            && fix(c).contains("Microsoft Sentinel Responder"),
        "{c:#}"
    );
    assert!(fix(c).contains(&app.h.sim.workspace_arm_id()), "{c:#}");
    check(&r, "sentinel.incidents", "fail");
    // Reader only: it reads, but comments would be refused.
    let (_app, r) = broken(
        |_| {},
        |sim| {
            sim.revoke_azure_role("Microsoft Sentinel Responder");
            sim.grant_azure_role("Microsoft Sentinel Reader", &sim.workspace_arm_id());
        },
    )
    .await;
    check(&r, "sentinel.incidents", "pass");
    let c = check(&r, "sentinel.role", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("only Microsoft Sentinel Reader"),
        "{c:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_role_without_clear_mobile_device_fails_exchange_rbac() {
    let (_app, r) = broken(
        |_| {},
        |sim| sim.remove_exchange_role_entry("Clear-MobileDevice"),
    )
    .await;
    let c = check(&r, "exchange.rbac", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("Clear-MobileDevice is in none of its roles"),
        "{c:#}"
    );
    assert!(fix(c).contains("docs/setup.md, step 4"), "{c:#}");
    // The reads still pass: only the wipe is missing.
    check(&r, "exchange.mobile_device", "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_exchange_rbac_warns_and_says_how_to_check_by_hand() {
    let app = app_with(|_| {}).await;
    app.h.sim.remove_exchange_rbac_read();
    let (code, r) = doctor(&app, &app.settings);
    assert_eq!(code, 0, "a warning is not a failure: {r:#}");
    let c = check(&r, "exchange.rbac", "warn");
    assert!(
        fix(c).contains("Get-ManagementRoleAssignment -RoleAssignee"),
        "{c:#}"
    );
    assert!(fix(c).contains("step 4.6"), "{c:#}");
    assert_read_only(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_audience_is_named_with_the_exact_string_to_use() {
    let (_app, r) = broken(
        |s| s.inbound.audiences = vec!["api://wipehook-demo/".into()],
        |_| {},
    )
    .await;
    let c = check(&r, "inbound.audience", "fail");
    assert_eq!(c["subject"], "api://wipehook-demo/");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("no app registration answers to api://wipehook-demo/"),
        "{c:#}"
    );
    assert!(
        fix(c).contains("trailing slash") && fix(c).contains("`api://wipehook-demo`"),
        "{c:#}"
    );
    // An app registration whose roles are not the configured ones.
    let (_app, r) = broken(
        |s| s.inbound.required_role = Some("Containment.Execute".into()),
        |_| {},
    )
    .await;
    let c = check(&r, "inbound.audience", "fail");
    assert!(
        c["saw"].as_str().unwrap().contains("Containment.Execute"),
        "{c:#}"
    );
    // v2 tokens: the client id must be an audience too.
    let (_app, r) = broken(|_| {}, |sim| sim.set_api_token_version(Some(2))).await;
    let c = check(&r, "inbound.audience", "fail");
    assert!(fix(c).contains("to inbound.audiences"), "{c:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_their_app_role_or_identity_are_named() {
    // The containment playbook's identity lost its app role.
    let (_app, r) = broken(
        |_| {},
        |sim| {
            sim.add_caller(
                PLAYBOOK_OID,
                "Wipehook-Contain-Incident",
                PrincipalKind::ManagedIdentity,
                None,
            )
        },
    )
    .await;
    let c = checks(&r, "inbound.caller")
        .into_iter()
        .find(|c| c["subject"] == PLAYBOOK_OID)
        .unwrap();
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        fix(c).contains(&format!(
            "servicePrincipals/{PLAYBOOK_OID}/appRoleAssignments"
        )),
        "{c:#}"
    );
    assert!(fix(c).contains("24 hours"), "{c:#}");
    // An object id that is nobody's (the client id pasted instead).
    let stranger = "11111111-2222-4333-8444-555555555555";
    let (_app, r) = broken(|s| s.inbound.allowed_callers.push(stranger.into()), |_| {}).await;
    let c = checks(&r, "inbound.caller")
        .into_iter()
        .find(|c| c["subject"] == stranger)
        .unwrap();
    assert_eq!(c["status"], "fail");
    assert!(fix(c).contains("identity.principalId"), "{c:#}");
    // An app registration instead of a managed identity: a warning.
    let app = app_with(|_| {}).await;
    app.h.sim.add_caller(
        APPROVER_OID,
        "some-app",
        PrincipalKind::Application,
        Some("Containment.Approve"),
    );
    let (code, r) = doctor(&app, &app.settings);
    assert_eq!(code, 0, "{r:#}");
    let c = checks(&r, "inbound.caller")
        .into_iter()
        .find(|c| c["subject"] == APPROVER_OID)
        .unwrap();
    assert_eq!(c["status"], "warn", "{c:#}");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("not a managed identity"),
        "{c:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_exchange_field_fails_with_the_field_named() {
    let (_app, r) = broken(
        |_| {},
        |sim| sim.rename_exchange_field("Get-MobileDevice", "ClientType", "ClientKind"),
    )
    .await;
    let c = check(&r, "exchange.mobile_device", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("missing field(s) wipehook reads: ClientType"),
        "{c:#}"
    );
    assert!(
        fix(c).contains("dry_run") && fix(c).contains("The canary"),
        "{c:#}"
    );
    let (_app, r) = broken(
        |_| {},
        |sim| {
            sim.rename_exchange_field("Get-MobileDeviceStatistics", "DeviceID", "DeviceIdentifier")
        },
    )
    .await;
    let c = check(&r, "exchange.statistics", "fail");
    assert!(
        c["saw"].as_str().unwrap().contains("DeviceID or DeviceId"),
        "{c:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_another_cloud_is_named() {
    // A sovereign resource in a public configuration.
    let (_app, r) = broken(
        |s| s.cloud.graph_resource = Some("https://graph.microsoft.us".into()),
        |_| {},
    )
    .await;
    let c = check(&r, "config.cloud", "fail");
    assert!(
        c["saw"]
            .as_str()
            .unwrap()
            .contains("cloud.graph_resource = https://graph.microsoft.us is a host of usgov"),
        "{c:#}"
    );
    assert!(fix(c).contains("remove the override"), "{c:#}");
    // A tenant that lives in another cloud than configured.
    let (_app, r) = broken(
        |_| {},
        |sim| sim.set_cloud_instance_name("microsoftonline.us"),
    )
    .await;
    let c = check(&r, "inbound.openid", "fail");
    assert!(
        c["saw"].as_str().unwrap().contains("another cloud"),
        "{c:#}"
    );
    assert!(fix(c).contains("cloud.name = \"usgov\""), "{c:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_a_wrong_workspace_and_a_bad_file_fail() {
    let (_app, r) = broken(|_| {}, |sim| sim.set_clock_offset(300)).await;
    let c = check(&r, "clock.skew", "fail");
    assert!(fix(c).contains("NTP"), "{c:#}");

    let (app, r) = broken(
        |s| {
            s.tenants[0].workspaces = vec![
                "/subscriptions/0b9f8e7d-6c5b-4a39-8271-605f4e3d2c1b/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/other-ws".into(),
            ]
        },
        |_| {},
    )
    .await;
    let c = check(&r, "sentinel.workspace", "fail");
    assert!(
        fix(c).contains("az monitor log-analytics workspace show -g soc-rg -n other-ws"),
        "{c:#}"
    );

    let bad = app.h.dir.join("bad.toml");
    std::fs::write(&bad, "[doctor]\ncanary_interval = \"soon\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wipehook"))
        .arg("--config")
        .arg(&bad)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = check(&r, "config.valid", "fail");
    assert!(c["saw"].as_str().unwrap().contains("soon"), "{c:#}");
}

fn canary_ok(metrics: &str, tenant: &str, check: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wipehook_canary_ok{")
                && l.contains(&format!("tenant=\"{tenant}\""))
                && l.contains(&format!("check=\"{check}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let r = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn until_canary(app: &TestApp, check: &str, want: i64) -> String {
    let tenant = app.h.sim.tenant_id();
    let started = Instant::now();
    loop {
        let (_, m) = get(app, "/metrics").await;
        if canary_ok(&m, &tenant, check) == Some(want) {
            return m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "canary {check} never {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_flips_when_exchange_renames_a_field_and_back_when_restored() {
    let app = app_with(|s| s.doctor.canary_interval = Duration::from_millis(300)).await;
    let m = until_canary(&app, "exchange.mobile_device", 1).await;
    for check in [
        "exchange.statistics",
        "exchange.rbac",
        "sentinel.workspace",
        "sentinel.incidents",
        "sentinel.role",
    ] {
        assert_eq!(
            canary_ok(&m, &app.h.sim.tenant_id(), check),
            Some(1),
            "{check}:\n{m}"
        );
    }
    assert!(
        m.contains("wipehook_canary_last_success_timestamp_seconds{"),
        "{m}"
    );
    let (s, body) = get(&app, "/readyz").await;
    assert_eq!(
        (
            s,
            serde_json::from_str::<Value>(&body).unwrap()["status"].clone()
        ),
        (200, "ready".into())
    );

    // Microsoft renames a field wipehook reads: the metric flips, readiness is degraded (still 200).
    app.h.sim.rename_exchange_field(
        "Get-MobileDevice",
        "DeviceActiveSyncVersion",
        "ActiveSyncVersion",
    );
    app.h
        .sim
        .rename_exchange_field("Get-MobileDevice", "ClientVersion", "ClientBuild");
    until_canary(&app, "exchange.mobile_device", 0).await;
    let (s, body) = get(&app, "/readyz").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200, "degraded, not failed: replicas stay in rotation");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["degraded"][0]["check"], "exchange.mobile_device", "{v}");
    assert!(
        v["degraded"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("DeviceActiveSyncVersion or ClientVersion"),
        "{v}"
    );

    // Restored: back to 1, ready again.
    app.h.sim.restore_exchange_fields();
    until_canary(&app, "exchange.mobile_device", 1).await;
    let (_, body) = get(&app, "/readyz").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ready"
    );
    // The canary only ever read.
    assert_read_only(&app);
}

/// Account steps configured: graph.account_steps checks each step's Graph
/// permission, and names the grant of the one missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_steps_need_their_graph_permissions() {
    use wipehook::domain::AccountStep;
    let all = |s: &mut wipehook::config::Settings| {
        s.policy.account_steps = vec![
            AccountStep::RevokeSessions,
            AccountStep::BlockSignIn,
            AccountStep::ConfirmCompromised,
        ]
    };
    let app = app_with(|_| {}).await;
    let mut s = app.settings.clone();
    all(&mut s);
    let (code, r) = doctor(&app, &s);
    assert_eq!(code, 0, "{r:#}");
    check(&r, "graph.account_steps", "pass");
    let (_app, r) = broken(all, |sim| {
        sim.revoke_app_role("User.EnableDisableAccount.All")
    })
    .await;
    let c = check(&r, "graph.account_steps", "fail");
    assert!(
        fix(c).contains("User.EnableDisableAccount.All")
            && !fix(c).contains("User.RevokeSessions.All"),
        "{c:#}"
    );
}

/// A tenant with the Defender mirror: graph.security checks the Graph
/// permission the mirror posts with, and names its grant when it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defender_mirror_needs_its_graph_permission() {
    let app = app_with(|_| {}).await;
    let mut s = app.settings.clone();
    s.tenants[0].defender_mirror = true;
    let (code, r) = doctor(&app, &s);
    assert_eq!(code, 0, "{r:#}");
    check(&r, "graph.security", "pass");

    let (_app, r) = broken(
        |s| s.tenants[0].defender_mirror = true,
        |sim| sim.revoke_app_role("SecurityIncident.ReadWrite.All"),
    )
    .await;
    let c = check(&r, "graph.security", "fail");
    assert!(
        fix(c).contains("SecurityIncident.ReadWrite.All") && fix(c).contains("/appRoleAssignments"),
        "{c:#}"
    );
}
