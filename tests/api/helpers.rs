//! spawn_app(): the real service on port 0 against a fresh simulated tenant.

use std::time::{Duration, Instant};

use serde_json::Value;
use wipehook::config::Settings;
use wipehook::harness::Harness;
use wipehook::startup::Running;
use wipehook_sim::{ExchangeCall, SimOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub h: Harness,
    pub running: Option<Running>,
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pg_db: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(db) = self.pg_db.take() {
            drop_pg_database(db);
        }
    }
}

/// Test settings: fast retries and verification, quick polling.
pub fn fast(s: &mut Settings) {
    s.worker.backoff_scale = 0.01;
    s.worker.idle_poll = Duration::from_millis(200);
    s.policy.verify_interval = Duration::from_millis(200);
    s.policy.entity_sync_wait = Duration::from_millis(300);
    s.server.poll_after_secs = 1;
    s.server.shutdown_grace = Duration::from_secs(5);
    // The canary reads ARM (and Exchange) on its own schedule; tests that
    // count calls or inject faults must not race it. tests/api/doctor.rs turns it on.
    s.doctor.canary_interval = Duration::ZERO;
}

pub async fn spawn_app() -> TestApp {
    spawn_with(SimOptions::default(), StoreKind::Sqlite, |_| {})
        .await
        .expect("app")
}

/// `None` when the store kind is not available here (PostgreSQL not running);
/// the caller then reports the skip.
pub async fn spawn_with(
    opts: SimOptions,
    store: StoreKind,
    f: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let h = Harness::start(opts).await.expect("simulated tenant");
    let mut settings = h.settings();
    fast(&mut settings);
    let mut pg_db = None;
    if store == StoreKind::Postgres {
        let url = pg_database().await?;
        pg_db = Some(url.clone());
        settings.store.url = url.into();
    }
    f(&mut settings);
    let running = h.spawn(settings.clone()).await.expect("wipehook starts");
    let base = format!("http://127.0.0.1:{}", running.port);
    Some(TestApp {
        h,
        running: Some(running),
        base,
        client: reqwest::Client::new(),
        settings,
        pg_db,
    })
}

impl TestApp {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    pub async fn post_incident(&self, body: &Value) -> reqwest::Response {
        self.post(
            "/api/v1/sentinel/incidents",
            Some(&self.h.run_token()),
            body,
        )
        .await
    }

    /// Poll the run's status URL until it answers 200.
    pub async fn wait_done(&self, location: &str) -> Value {
        let started = Instant::now();
        loop {
            let r = self
                .client
                .get(location)
                .bearer_auth(self.h.run_token())
                .send()
                .await
                .expect("poll");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            if status == 200 {
                return body;
            }
            assert_eq!(status, 202, "unexpected poll answer {body}");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "run not done in 30 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run the queue until nothing is due or running (follow-ups scheduled
    /// later, such as verification polls, are left).
    pub async fn drain(&self) {
        self.running()
            .run_until_idle(Duration::ZERO)
            .await
            .expect("queue drained");
    }

    /// POST an incident, drain the queue, and read its result.
    pub async fn contain(&self, body: &Value) -> Value {
        let r = self.post_incident(body).await;
        assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        self.drain().await;
        self.wait_done(&location).await
    }

    pub async fn run(&self, id: &str) -> Value {
        let r = self
            .client
            .get(format!("{}/api/v1/runs/{id}", self.base))
            .bearer_auth(self.h.run_token())
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    pub fn clears(&self) -> Vec<ExchangeCall> {
        self.h
            .sim
            .exchange_calls()
            .into_iter()
            .filter(|c| c.cmdlet == "Clear-MobileDevice" && c.parameters.get("Cancel").is_none())
            .collect()
    }

    pub fn successful_clears(&self) -> Vec<ExchangeCall> {
        self.clears()
            .into_iter()
            .filter(|c| c.response_status == 200)
            .collect()
    }

    /// Wait until a condition on the simulated tenant holds.
    pub async fn eventually(&self, what: &str, f: impl Fn() -> bool) {
        let started = Instant::now();
        while !f() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until a note on the incident, as the Defender portal shows it
    /// (each comment as first written), satisfies `f`; return its text. On
    /// a timeout, fail with every note the incident has.
    pub async fn wait_note(&self, incident: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let view = self.h.sim.defender_view(incident);
            if let Some(c) = view.iter().find(|c| f(&c.text)) {
                return c.text.clone();
            }
            if started.elapsed() > Duration::from_secs(30) {
                let all: Vec<String> = view
                    .iter()
                    .map(|c| format!("[{}] {}", c.source, c.text))
                    .collect();
                panic!(
                    "timed out waiting for a note: {what}; the incident has:\n{}",
                    all.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The notes on the incident as the Defender portal shows them.
    pub fn notes(&self, incident: &str) -> Vec<String> {
        self.h
            .sim
            .defender_view(incident)
            .into_iter()
            .map(|c| c.text)
            .collect()
    }

    pub fn incident_id(&self, name: &str) -> String {
        self.h.sim.incident_arm_id(name)
    }
}

/// Every safety invariant over all Exchange calls a test made.
pub fn assert_safe(calls: &[ExchangeCall]) {
    for c in calls {
        match c.cmdlet.as_str() {
            "Get-MobileDevice" => assert!(
                c.parameters["Mailbox"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "Get-MobileDevice without Mailbox: {:?}",
                c.parameters
            ),
            "Clear-MobileDevice" if c.parameters.get("Cancel").is_none() => {
                assert_eq!(
                    c.parameters["AccountOnly"], true,
                    "wipe without AccountOnly: {:?}",
                    c.parameters
                );
                assert_eq!(c.parameters["Confirm"], false);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- PostgreSQL

pub fn pg_admin_url() -> String {
    std::env::var("WIPEHOOK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database for one test, or None (with the reason printed) when
/// PostgreSQL is not reachable. With WIPEHOOK_TEST_POSTGRES=required
/// (set by .ci/run), unreachable is a failure instead.
pub async fn pg_database() -> Option<String> {
    use sqlx::Connection;
    let admin = pg_admin_url();
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut c) => {
            let name = format!("wh_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .expect("create database");
            let _ = c.close().await;
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or(admin);
            Some(format!("{base}/{name}"))
        }
        Err(e) => {
            if std::env::var("WIPEHOOK_TEST_POSTGRES").as_deref() == Ok("required") {
                panic!(
                    "PostgreSQL is required (WIPEHOOK_TEST_POSTGRES=required) but not reachable at {admin}: {e}"
                );
            }
            eprintln!(
                "SKIPPED (PostgreSQL half): not reachable at {admin}: {e}. Set WIPEHOOK_TEST_POSTGRES_URL or start PostgreSQL."
            );
            None
        }
    }
}

/// A PostgreSQL database of its own, dropped with this value.
pub struct PgDatabase {
    pub url: String,
}

impl PgDatabase {
    /// `None` (the skip printed) when PostgreSQL is not reachable.
    pub async fn create() -> Option<PgDatabase> {
        pg_database().await.map(|url| PgDatabase { url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        drop_pg_database(self.url.clone());
    }
}

fn drop_pg_database(url: String) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    let name = name.to_string();
    let admin = pg_admin_url();
    // Best effort, on a thread of its own (Drop cannot await).
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        });
    })
    .join();
}

/// Run a test body against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::helpers::StoreKind::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::helpers::StoreKind::Postgres).await;
            }
        }
    };
}
