//! Never twice, never lost (exactly-once issue): deduplicated deliveries,
//! device-level idempotency across runs, crash safety with SIGKILL, several
//! processes on one PostgreSQL database.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wipehook::config::Settings;
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::both_stores;
use crate::helpers::*;
use wipehook::domain::{DeviceGuid, RunId, TenantId, Upn, WipeState};

async fn post_with_headers(
    app: &TestApp,
    body: &Value,
    run_id: &str,
    query: &str,
) -> (u16, String, String) {
    let r = app
        .client
        .post(format!("{}/api/v1/sentinel/incidents{query}", app.base))
        .bearer_auth(app.h.run_token())
        .header("x-ms-workflow-run-id", run_id)
        .header("x-ms-workflow-name", "Wipehook-Contain-Incident")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v: Value = r.json().await.unwrap();
    (
        status,
        v["run_id"].as_str().unwrap_or("").to_string(),
        location,
    )
}

async fn ten_concurrent(store: StoreKind) {
    let Some(app) = spawn_with(
        SimOptions {
            latency: Duration::from_millis(20),
            ..Default::default()
        },
        store,
        |_| {},
    )
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("kim@contoso.com", "f0000000-0000-4000-8000-000000000001");
    let g1 = sim.add_device("kim@contoso.com", DeviceSpec::iphone());
    let g2 = sim.add_device("kim@contoso.com", DeviceSpec::outlook());
    let body = app
        .h
        .incident_body("inc-dup", 21, "High", &["kim@contoso.com"]);
    let futs: Vec<_> = (0..10)
        .map(|_| post_with_headers(&app, &body, "08585000000000000001", ""))
        .collect();
    let answers = futures_util::future::join_all(futs).await;
    let ids: std::collections::BTreeSet<&str> =
        answers.iter().map(|(_, id, _)| id.as_str()).collect();
    assert!(answers.iter().all(|(s, _, _)| *s == 202), "{answers:?}");
    assert_eq!(
        ids.len(),
        1,
        "one run for ten identical deliveries: {ids:?}"
    );
    assert!(
        answers.iter().all(|(_, _, l)| *l == answers[0].2),
        "same Location"
    );
    app.wait_done(&answers[0].2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for g in [&g1, &g2] {
        assert_eq!(
            app.successful_clears()
                .iter()
                .filter(|c| c.parameters["Identity"] == g.as_str())
                .count(),
            1,
            "exactly one Clear-MobileDevice for {g}"
        );
    }
    assert_eq!(
        app.running()
            .shared
            .store
            .list_runs(10)
            .await
            .unwrap()
            .len(),
        1
    );
}
both_stores!(
    ten_identical_concurrent_deliveries_make_one_run,
    ten_concurrent
);

async fn retries_reruns_and_force(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("lee@contoso.com", "f0000000-0000-4000-8000-000000000002");
    let g = sim.add_device("lee@contoso.com", DeviceSpec::iphone());
    let body = app
        .h
        .incident_body("inc-rerun", 22, "High", &["lee@contoso.com"]);
    let (_, first, loc) = post_with_headers(&app, &body, "run-A", "").await;
    app.wait_done(&loc).await;
    // Logic Apps retries the same action: same run.
    for _ in 0..3 {
        let (s, again, _) = post_with_headers(&app, &body, "run-A", "").await;
        assert_eq!((s, again.as_str()), (202, first.as_str()));
    }
    // An analyst reruns the playbook: a new run that sends nothing new.
    let (_, second, loc2) = post_with_headers(&app, &body, "run-B", "").await;
    assert_ne!(second, first);
    let result = app.wait_done(&loc2).await;
    let dev = &result["users"][0]["devices"][0];
    assert_eq!(dev["outcome"], "already_requested", "{result}");
    assert_eq!(dev["prior_run_id"], first.as_str());
    assert!(dev["prior_requested_at"].is_string());
    assert_eq!(sim.device(&g).unwrap().wipe_request_count, 1);
    let incident = app.incident_id("inc-rerun");
    app.eventually("two comments, one per run", || {
        sim.comments(&incident).len() == 2
    })
    .await;
    let rerun = app
        .wait_note(&incident, "the rerun names the earlier wipe", |t| {
            t.contains("wiped by an earlier run")
        })
        .await;
    assert!(
        rerun.starts_with("<p><b>WAITING FOR PHONES"),
        "the earlier wipe is not acknowledged yet: {rerun}"
    );
    // force re-sends, explicitly.
    let (_, third, loc3) = post_with_headers(&app, &body, "run-C", "?force=true").await;
    let result = app.wait_done(&loc3).await;
    assert_eq!(result["force"], true);
    assert_eq!(result["users"][0]["devices"][0]["outcome"], "requested");
    assert_ne!(third, second);
    assert_eq!(sim.device(&g).unwrap().wipe_request_count, 2);
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    retries_reuse_the_run_reruns_send_nothing_new_force_resends,
    retries_reruns_and_force
);

// ------------------------------------------------------------ processes

pub(crate) fn write_config(dir: &Path, name: &str, s: &Settings) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml::to_string(s).expect("settings to TOML")).unwrap();
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) base: String,
}

pub(crate) fn start_process(dir: &Path, name: &str, config: &Path) -> Proc {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wipehook"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("WIPEHOOK_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "WIPEHOOK_SERVER__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn wipehook");
    Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub(crate) async fn wait_healthy(p: &Proc) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", p.base)).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "process did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A service-less harness: the simulated tenant and settings for processes.
pub(crate) async fn process_harness(
    store: StoreKind,
) -> Option<(wipehook::harness::Harness, Settings)> {
    let h = wipehook::harness::Harness::start(SimOptions {
        latency: Duration::from_millis(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s = h.settings();
    fast(&mut s);
    s.store.lease = Duration::from_secs(2);
    s.worker.exchange_initial_concurrency = 2;
    s.worker.exchange_max_concurrency = 2;
    if store == StoreKind::Postgres {
        s.store.url = pg_database().await?.into();
    }
    Some((h, s))
}

async fn sigkill_mid_run(store: StoreKind) {
    let Some((h, settings)) = process_harness(store).await else {
        return;
    };
    let sim = &h.sim;
    let users: Vec<String> = (0..5).map(|i| format!("crash{i}@contoso.com")).collect();
    let mut devices = vec![];
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("f1000000-0000-4000-8000-00000000000{i}"));
        devices.push(sim.add_device(u, DeviceSpec::iphone()));
        devices.push(sim.add_device(u, DeviceSpec::outlook()));
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = h.incident_body("inc-crash", 31, "High", &refs);
    sim.add_incident(
        "inc-crash",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let config = write_config(&h.dir, "crash", &settings);
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
    // Kill -9 as soon as the first wipe went out: mid-run.
    let started = Instant::now();
    while !sim
        .exchange_calls()
        .iter()
        .any(|c| c.cmdlet == "Clear-MobileDevice")
    {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let sent_before = sim
        .exchange_calls()
        .iter()
        .filter(|c| c.cmdlet == "Clear-MobileDevice")
        .count();
    assert!(
        sent_before < devices.len(),
        "killed mid-run ({sent_before} of {} sent)",
        devices.len()
    );

    let mut b = start_process(&h.dir, "second", &config);
    wait_healthy(&b).await;
    let fake = TestAppRef { h: &h };
    let result = fake.wait(&b.base, &run_id).await;
    assert_eq!(result["status"], "completed", "{result}");
    let incident = sim.incident_arm_id("inc-crash");
    let started = Instant::now();
    while sim.comments(&incident).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "comment after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.child.kill().unwrap();
    let _ = b.child.wait();

    // Every device: exactly one wipe recorded, at least one request sent, at
    // most one extra (the one call in flight at the kill).
    let store = wipehook::store::Store::connect(&settings.store)
        .await
        .unwrap();
    let ledger = store.ledger(&tid(&sim.tenant_id())).await.unwrap();
    assert_eq!(ledger.len(), devices.len(), "{ledger:?}");
    for g in &devices {
        assert_eq!(
            ledger
                .iter()
                .filter(|r| r.guid.as_str() == g && r.state == WipeState::Requested)
                .count(),
            1,
            "one recorded wipe for {g}"
        );
        let n = sim.device(g).unwrap().wipe_request_count;
        assert!((1..=2).contains(&n), "{g} requested {n} times");
    }
    let repeated: usize = devices
        .iter()
        .map(|g| sim.device(g).unwrap().wipe_request_count - 1)
        .sum();
    assert!(
        repeated <= 2,
        "at most the calls in flight (2 Exchange slots) repeated, got {repeated}"
    );
    assert_eq!(sim.comments(&incident).len(), 1, "one comment");
    assert_eq!(result["summary"]["wipes_requested"], devices.len());
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    sigkill_mid_run_then_restart_completes_exactly_once,
    sigkill_mid_run
);

pub(crate) struct TestAppRef<'a> {
    pub(crate) h: &'a wipehook::harness::Harness,
}
impl TestAppRef<'_> {
    pub(crate) async fn wait(&self, base: &str, run_id: &str) -> Value {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client
                .get(format!("{base}/api/v1/runs/{run_id}"))
                .bearer_auth(self.h.run_token())
                .send()
                .await
                && r.status().as_u16() == 200
            {
                return r.json().await.unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "run {run_id} not done"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_one_killed() {
    let Some((h, settings)) = process_harness(StoreKind::Postgres).await else {
        return;
    };
    let sim = &h.sim;
    let users: Vec<String> = (0..6).map(|i| format!("ha{i}@contoso.com")).collect();
    let mut devices = vec![];
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("f2000000-0000-4000-8000-00000000000{i}"));
        devices.push(sim.add_device(u, DeviceSpec::iphone()));
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = h.incident_body("inc-ha", 41, "High", &refs);
    sim.add_incident(
        "inc-ha",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let config = write_config(&h.dir, "ha", &settings);
    let mut a = start_process(&h.dir, "replica-a", &config);
    let mut b = start_process(&h.dir, "replica-b", &config);
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let client = reqwest::Client::new();
    // The same delivery to both replicas at once: one run.
    let send = |base: String| {
        let client = client.clone();
        let token = h.run_token();
        let body = body.clone();
        async move {
            let r = client
                .post(format!("{base}/api/v1/sentinel/incidents"))
                .bearer_auth(token)
                .header("x-ms-workflow-run-id", "ha-run-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["run_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (ra, rb) = tokio::join!(send(a.base.clone()), send(b.base.clone()));
    assert_eq!(ra, rb, "deduplicated across processes");
    let started = Instant::now();
    while !sim
        .exchange_calls()
        .iter()
        .any(|c| c.cmdlet == "Clear-MobileDevice")
    {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let result = TestAppRef { h: &h }.wait(&b.base, &ra).await;
    assert_eq!(
        result["summary"]["wipes_requested"],
        devices.len(),
        "{result}"
    );
    let incident = sim.incident_arm_id("inc-ha");
    let started = Instant::now();
    while sim.comments(&incident).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let store = wipehook::store::Store::connect(&settings.store)
        .await
        .unwrap();
    let ledger = store.ledger(&tid(&sim.tenant_id())).await.unwrap();
    assert_eq!(ledger.len(), devices.len());
    for g in &devices {
        assert!((1..=2).contains(&sim.device(g).unwrap().wipe_request_count));
    }
    assert_eq!(sim.comments(&incident).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_releases_claims() {
    let Some((h, mut settings)) = process_harness(StoreKind::Sqlite).await else {
        return;
    };
    settings.store.lease = Duration::from_secs(60); // a restart must not need the lease to expire
    let sim = &h.sim;
    let users: Vec<String> = (0..4).map(|i| format!("term{i}@contoso.com")).collect();
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("f3000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
        sim.add_device(u, DeviceSpec::outlook());
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = h.incident_body("inc-term", 51, "High", &refs);
    sim.add_incident(
        "inc-term",
        body["object"]["properties"]["relatedEntities"].clone(),
    );
    let config = write_config(&h.dir, "term", &settings);
    let mut a = start_process(&h.dir, "term-a", &config);
    wait_healthy(&a).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/sentinel/incidents", a.base))
        .bearer_auth(h.run_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    let run_id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    while !sim
        .exchange_calls()
        .iter()
        .any(|c| c.cmdlet == "Clear-MobileDevice")
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    let status = a.child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // Restart: work continues at once (claims were released, not left to expire).
    let mut b = start_process(&h.dir, "term-b", &config);
    wait_healthy(&b).await;
    let t = Instant::now();
    let result = TestAppRef { h: &h }.wait(&b.base, &run_id).await;
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "finished without waiting for a 60 s lease"
    );
    assert_eq!(result["summary"]["wipes_requested"], 8, "{result}");
    b.child.kill().unwrap();
    let _ = b.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_claimed_twice_in_a_run_or_across_runs_is_sent_once() {
    use wipehook::store::WipeClaim;
    let app = spawn_app().await;
    let store = app.running().shared.store.clone();
    let t = tid(&app.h.sim.tenant_id());
    let g = DeviceGuid::parse("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a").unwrap();
    let runs: Vec<RunId> = (0..5).map(|_| RunId::new()).collect();
    let claim = |run: usize, upn: &'static str, force: bool| {
        let (store, t, g, run) = (store.clone(), t.clone(), g.clone(), runs[run].clone());
        async move {
            store
                .claim_wipe(&t, &g, &run, &Upn::parse(upn).unwrap(), force)
                .await
                .unwrap()
        }
    };
    let existing = |c: WipeClaim| matches!(c, WipeClaim::Existing { .. });
    // The same mailbox reached through two entities of one run: one send.
    assert_eq!(claim(1, "jdoe@contoso.com", false).await, WipeClaim::Mine);
    assert!(existing(claim(1, "john.doe@contoso.com", false).await));
    // The same task again after a crash: its own claim, sent again (the one repeat).
    assert_eq!(claim(1, "jdoe@contoso.com", false).await, WipeClaim::Mine);
    // Another run: not while the first is sending, and not after it requested.
    assert!(existing(claim(2, "jdoe@contoso.com", false).await));
    // force re-sends from another run, once.
    assert_eq!(claim(3, "jdoe@contoso.com", true).await, WipeClaim::Mine);
    assert!(existing(claim(3, "john.doe@contoso.com", true).await));
    // A released claim (the send failed for good) frees the device.
    store
        .release_claims(&t, &runs[3], &Upn::parse("jdoe@contoso.com").unwrap())
        .await
        .unwrap();
    assert_eq!(claim(4, "jdoe@contoso.com", false).await, WipeClaim::Mine);
}

pub(crate) fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// Issue 13: two processes on one PostgreSQL database, each given half of a
/// storm at once, together never pass the tenant's hourly budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_never_pass_the_budget() {
    let Some((h, mut settings)) = process_harness(StoreKind::Postgres).await else {
        return;
    };
    settings.policy.max_wipes_per_hour = 5;
    settings.worker.exchange_initial_concurrency = 8;
    settings.worker.exchange_max_concurrency = 8;
    let sim = &h.sim;
    let users: Vec<String> = (0..10).map(|i| format!("bud{i}@contoso.com")).collect();
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("f3000000-0000-4000-8000-0000000000{i:02}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let config = write_config(&h.dir, "budget", &settings);
    let a = start_process(&h.dir, "budget-a", &config);
    let b = start_process(&h.dir, "budget-b", &config);
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let client = reqwest::Client::new();
    let posts = users.iter().enumerate().map(|(i, u)| {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let body = h.incident_body(&format!("inc-bud-{i}"), 60 + i as i64, "High", &[u]);
        let client = client.clone();
        let token = h.run_token();
        async move {
            let r = client
                .post(format!("{base}/api/v1/sentinel/incidents"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let id = r.json::<Value>().await.unwrap()["run_id"]
                .as_str()
                .unwrap()
                .to_string();
            (base, id)
        }
    });
    let runs = futures_util::future::join_all(posts).await;
    let fake = TestAppRef { h: &h };
    let mut held = 0;
    for (base, id) in &runs {
        let r = fake.wait(base, id).await;
        if r["status"] == "held" {
            held += 1;
        }
    }
    let sent = sim
        .exchange_calls()
        .iter()
        .filter(|c| {
            c.cmdlet == "Clear-MobileDevice"
                && c.parameters.get("Cancel").is_none()
                && c.response_status == 200
        })
        .count();
    assert_eq!(sent, 5, "the budget, never more, across two replicas");
    assert_eq!(held, 5);
    for mut p in [a, b] {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

/// Issue 13: the kill switch thrown on one replica stops the other at once
/// (its guard reads the stored switch under the guard row's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_thrown_on_one_replica_stops_the_other() {
    let Some((h, settings)) = process_harness(StoreKind::Postgres).await else {
        return;
    };
    let sim = &h.sim;
    let users: Vec<String> = (0..3).map(|i| format!("ksr{i}@contoso.com")).collect();
    for (i, u) in users.iter().enumerate() {
        sim.add_user(u, &format!("f4000000-0000-4000-8000-0000000000{i:02}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let config = write_config(&h.dir, "ksr", &settings);
    let a = start_process(&h.dir, "ksr-a", &config);
    let b = start_process(&h.dir, "ksr-b", &config);
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/kill-switch", a.base))
        .bearer_auth(h.approver_token())
        .json(&serde_json::json!({"engaged": true, "reason": "replica drill"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut runs = vec![];
    for (i, u) in users.iter().enumerate() {
        let body = h.incident_body(&format!("inc-ksr-{i}"), 80 + i as i64, "High", &[u]);
        let r = client
            .post(format!("{}/api/v1/sentinel/incidents", b.base))
            .bearer_auth(h.run_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        runs.push(
            r.json::<Value>().await.unwrap()["run_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let fake = TestAppRef { h: &h };
    for id in &runs {
        let r = fake.wait(&b.base, id).await;
        assert_eq!(r["status"], "held", "{r}");
        assert!(
            r["users"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("replica drill"),
            "{r}"
        );
    }
    assert!(
        !sim.exchange_calls()
            .iter()
            .any(|c| c.cmdlet == "Clear-MobileDevice"),
        "no wipe on the other replica"
    );
    let ready: Value = client
        .get(format!("{}/readyz", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["kill_switch"]["engaged"], true, "{ready}");
    for mut p in [a, b] {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}
