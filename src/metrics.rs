//! Prometheus metrics (`GET /metrics`). Counters and histograms are updated
//! where things happen; store-derived gauges are read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::RunStatus;
use crate::store::StoreStats;

type Labels = Vec<(String, String)>;

#[derive(Clone)]
struct Buckets;
impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ])
    }
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs_accepted: Family<Labels, Counter>,
    deliveries_deduplicated: Counter,
    device_outcomes: Family<Labels, Counter>,
    upstream_latency: Family<Labels, Histogram, Buckets>,
    retries: Family<Labels, Counter>,
    runs: Family<Labels, Gauge>,
    queue_depth: Gauge,
    oldest_pending: Gauge<f64, std::sync::atomic::AtomicU64>,
    oldest_work: Gauge<f64, std::sync::atomic::AtomicU64>,
    held_runs: Gauge,
    dead_tasks: Gauge,
    exchange_limit: Family<Labels, Gauge>,
    exchange_in_flight: Family<Labels, Gauge>,
    intake_rejections: Family<Labels, Counter>,
    records: Family<Labels, Counter>,
    canary_ok: Family<Labels, Gauge>,
    guard_held: Family<Labels, Counter>,
    kill_switch: Gauge,
    account_steps: Family<Labels, Counter>,
    canary_last_success: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("wipehook");
        let runs_accepted = Family::<Labels, Counter>::default();
        r.register(
            "runs_accepted",
            "Runs created from accepted calls, by trigger",
            runs_accepted.clone(),
        );
        let deliveries_deduplicated = Counter::default();
        r.register(
            "deliveries_deduplicated",
            "Calls answered with an existing run (Logic Apps retries, duplicate triggers)",
            deliveries_deduplicated.clone(),
        );
        let device_outcomes = Family::<Labels, Counter>::default();
        r.register("device_outcomes", "Device decisions: requested, would_request, already_requested, skipped, failed, acknowledged, cancelled", device_outcomes.clone());
        let upstream_latency = Family::<Labels, Histogram, Buckets>::new_with_constructor(Buckets);
        r.register(
            "upstream_request_duration_seconds",
            "Latency of calls to Exchange, ARM, Graph, by operation and HTTP status",
            upstream_latency.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        r.register(
            "upstream_retries",
            "Retried upstream calls, by upstream and reason",
            retries.clone(),
        );
        let runs = Family::<Labels, Gauge>::default();
        r.register("runs", "Runs in the store, by status", runs.clone());
        let queue_depth = Gauge::default();
        r.register("queue_depth", "Tasks ready to run now", queue_depth.clone());
        let oldest_pending = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "oldest_pending_work_seconds",
            "Age of the oldest task that is due and not yet done",
            oldest_pending.clone(),
        );
        let oldest_work = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "oldest_unfinished_work_seconds",
            "Age of the oldest unfinished contain, resolve or entities task, retries included (what keeps a run open)",
            oldest_work.clone(),
        );
        let held_runs = Gauge::default();
        r.register(
            "held_runs",
            "Runs held for approval (blast radius or hourly budget)",
            held_runs.clone(),
        );
        let dead_tasks = Gauge::default();
        r.register(
            "dead_tasks",
            "Tasks given up after retries (see the run's errors)",
            dead_tasks.clone(),
        );
        let exchange_limit = Family::<Labels, Gauge>::default();
        r.register(
            "exchange_concurrency_limit",
            "Current adaptive Exchange concurrency per tenant",
            exchange_limit.clone(),
        );
        let exchange_in_flight = Family::<Labels, Gauge>::default();
        r.register(
            "exchange_calls_in_flight",
            "Exchange calls holding a place of the tenant's limit now",
            exchange_in_flight.clone(),
        );
        let intake_rejections = Family::<Labels, Counter>::default();
        r.register(
            "intake_rejections",
            "Calls refused at intake, by reason",
            intake_rejections.clone(),
        );
        let records = Family::<Labels, Counter>::default();
        r.register(
            "records",
            "Notes of the record on incidents: written (by verdict), or skipped (by reason)",
            records.clone(),
        );
        let canary_ok = Family::<Labels, Gauge>::default();
        r.register(
            "canary_ok",
            "1 when the canary's read-only check passed last time, 0 when it failed (docs/operations.md, The canary)",
            canary_ok.clone(),
        );
        let canary_last_success =
            Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "canary_last_success_timestamp_seconds",
            "Unix time of the canary check's last success",
            canary_last_success.clone(),
        );
        let guard_held = Family::<Labels, Counter>::default();
        r.register(
            "guard_held",
            "Users held before a send by the guard, by cause: tenant (policy.max_wipes_per_hour), service (guard.max_wipes_per_hour), kill_switch",
            guard_held.clone(),
        );
        let account_steps = Family::<Labels, Counter>::default();
        r.register(
            "account_steps",
            "Account steps through Microsoft Graph, by step (revoke_sessions, block_sign_in, confirm_compromised) and result (done, skipped, failed, undone)",
            account_steps.clone(),
        );
        let kill_switch = Gauge::default();
        r.register(
            "kill_switch_engaged",
            "1 while the kill switch is engaged (stored or guard.kill_switch): no wipe is sent",
            kill_switch.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                canary_ok,
                guard_held,
                kill_switch,
                account_steps,
                canary_last_success,
                registry: r,
                runs_accepted,
                deliveries_deduplicated,
                device_outcomes,
                upstream_latency,
                retries,
                runs,
                queue_depth,
                oldest_pending,
                oldest_work,
                held_runs,
                dead_tasks,
                exchange_limit,
                exchange_in_flight,
                intake_rejections,
                records,
            }),
        }
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn run_accepted(&self, trigger: &str) {
        self.inner
            .runs_accepted
            .get_or_create(&Self::l(&[("trigger", trigger)]))
            .inc();
    }
    pub fn delivery_deduplicated(&self) {
        self.inner.deliveries_deduplicated.inc();
    }
    pub fn account_step(&self, step: &str, result: &str) {
        self.inner
            .account_steps
            .get_or_create(&Self::l(&[("step", step), ("result", result)]))
            .inc();
    }
    pub fn guard_held(&self, cause: &str) {
        self.inner
            .guard_held
            .get_or_create(&Self::l(&[("cause", cause)]))
            .inc();
    }
    pub fn set_kill_switch(&self, engaged: bool) {
        self.inner.kill_switch.set(engaged as i64);
    }
    pub fn device_outcome(&self, outcome: &str) {
        self.inner
            .device_outcomes
            .get_or_create(&Self::l(&[("outcome", outcome)]))
            .inc();
    }
    pub fn upstream_latency(&self, upstream: &str, operation: &str, status: u16, d: Duration) {
        let s = status.to_string();
        self.inner
            .upstream_latency
            .get_or_create(&Self::l(&[
                ("upstream", upstream),
                ("operation", operation),
                ("status", &s),
            ]))
            .observe(d.as_secs_f64());
    }
    pub fn retry(&self, upstream: &str, reason: &str) {
        self.inner
            .retries
            .get_or_create(&Self::l(&[("upstream", upstream), ("reason", reason)]))
            .inc();
    }
    pub fn record_written(&self, verdict: &str) {
        self.inner
            .records
            .get_or_create(&Self::l(&[("result", "written"), ("verdict", verdict)]))
            .inc();
    }
    /// A note not written: `result` says why (`skipped_incident_limit`,
    /// `skipped_run_budget`), `verdict` what it would have said.
    pub fn record_skipped(&self, result: &str, verdict: &str) {
        self.inner
            .records
            .get_or_create(&Self::l(&[("result", result), ("verdict", verdict)]))
            .inc();
    }
    pub fn intake_rejected(&self, reason: &str) {
        self.inner
            .intake_rejections
            .get_or_create(&Self::l(&[("reason", reason)]))
            .inc();
    }
    pub fn exchange_limit(&self, tenant: &str, limit: usize, in_flight: usize) {
        let l = Self::l(&[("tenant", tenant)]);
        self.inner
            .exchange_limit
            .get_or_create(&l)
            .set(limit as i64);
        self.inner
            .exchange_in_flight
            .get_or_create(&l)
            .set(in_flight as i64);
    }

    /// A canary check's latest result.
    pub fn canary(&self, tenant: &str, check: &str, ok: bool, last_success_secs: Option<f64>) {
        let l = Self::l(&[("tenant", tenant), ("check", check)]);
        self.inner.canary_ok.get_or_create(&l).set(ok as i64);
        if let Some(t) = last_success_secs {
            self.inner.canary_last_success.get_or_create(&l).set(t);
        }
    }

    /// Render the text format, after refreshing the store-derived gauges.
    pub fn render(&self, stats: Option<&StoreStats>) -> String {
        if let Some(s) = stats {
            for &st in RunStatus::ALL {
                let n = s
                    .runs_by_status
                    .iter()
                    .find(|(k, _)| *k == st)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                self.inner
                    .runs
                    .get_or_create(&Self::l(&[("status", st.as_str())]))
                    .set(n);
            }
            self.inner.queue_depth.set(s.ready_tasks);
            self.inner
                .oldest_pending
                .set(s.oldest_ready_ms.unwrap_or(0) as f64 / 1000.0);
            self.inner
                .oldest_work
                .set(s.oldest_work_ms.unwrap_or(0) as f64 / 1000.0);
            self.inner.held_runs.set(s.held_runs);
            self.inner.dead_tasks.set(s.dead_tasks);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}
