//! The canary: the doctor's read-only Exchange and Sentinel checks
//! (`probes`) inside the service, for each tenant every
//! `doctor.canary_interval`, so the day Microsoft changes something is
//! noticed before an incident. It runs on the worker side, which holds the
//! upstream clients; HTTP handlers only read its results from `Shared`
//! (`CanaryBoard`): `/readyz` shows a failing check as degraded (still 200:
//! every replica sees the same tenant, taking them out of rotation would
//! help nobody). Results are exported as `wipehook_canary_ok{tenant,check}`
//! and `wipehook_canary_last_success_timestamp_seconds{tenant,check}`; a
//! change is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

use super::{Check, Status, probes};
use crate::state::WorkerState;
use crate::store::now_ms;

/// One check's latest canary result.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryEntry {
    pub tenant: String,
    pub check: String,
    pub ok: bool,
    /// Since when (ms) the check has been in this state.
    #[serde(skip)]
    pub since_ms: i64,
    #[serde(skip)]
    pub last_success_ms: Option<i64>,
    /// What the check saw last.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The canary's latest results, shared with the HTTP side (plain data: no
/// client in here).
#[derive(Default)]
pub struct CanaryBoard {
    entries: Mutex<BTreeMap<(String, String), CanaryEntry>>,
}

impl CanaryBoard {
    /// Record a result; returns the previous `ok` when it changed (None for
    /// the first result of a check, or no change).
    fn record(&self, tenant: &str, c: &Check, ok: bool) -> (bool, Option<bool>, CanaryEntry) {
        let now = now_ms();
        let mut m = self.entries.lock().expect("canary board lock");
        let key = (tenant.to_string(), c.id.to_string());
        let prev = m.get(&key).cloned();
        let entry = CanaryEntry {
            tenant: tenant.to_string(),
            check: c.id.to_string(),
            ok,
            since_ms: match &prev {
                Some(p) if p.ok == ok => p.since_ms,
                _ => now,
            },
            last_success_ms: if ok {
                Some(now)
            } else {
                prev.as_ref().and_then(|p| p.last_success_ms)
            },
            reason: c.saw.clone(),
            fix: c.fix.clone(),
        };
        m.insert(key, entry.clone());
        let first = prev.is_none();
        (first, prev.map(|p| p.ok).filter(|was| *was != ok), entry)
    }

    /// The checks failing now, by tenant and check.
    pub fn failing(&self) -> Vec<CanaryEntry> {
        let m = self.entries.lock().expect("canary board lock");
        m.values().filter(|e| !e.ok).cloned().collect()
    }

    /// Every check's latest result.
    pub fn all(&self) -> Vec<CanaryEntry> {
        let m = self.entries.lock().expect("canary board lock");
        m.values().cloned().collect()
    }
}

/// Every `doctor.canary_interval` (0: never), one round of checks for each
/// tenant, the first at start-up.
pub async fn run(state: Arc<WorkerState>, stop: Arc<Notify>) {
    let interval = state.settings.doctor.canary_interval;
    if interval.is_zero() {
        return;
    }
    loop {
        if state.is_shutting_down() {
            return;
        }
        once(&state).await;
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(interval) => {},
        }
    }
}

/// One round: the probes for every tenant, recorded, exported, logged on change.
pub async fn once(state: &WorkerState) {
    for (id, ctx) in &state.tenants {
        let u = probes::Upstream {
            exchange: &state.exchange,
            arm: &state.arm,
            tokens: &ctx.tokens,
            tenant: &ctx.tenant,
        };
        let mut checks = probes::exchange(&u).await;
        checks.extend(probes::sentinel(&u).await);
        // One result per check id: the worst of its subjects (workspaces).
        let mut worst: BTreeMap<&'static str, Check> = BTreeMap::new();
        for c in checks {
            match worst.get(c.id) {
                Some(w) if w.status >= c.status => {}
                _ => {
                    worst.insert(c.id, c);
                }
            }
        }
        for c in worst.values() {
            // Skipped (no token), or no canary mailbox to read: nothing to export.
            let unconfigured = ctx.tenant.canary.is_none()
                && matches!(c.id, "exchange.mobile_device" | "exchange.statistics");
            if c.status == Status::Skip || unconfigured {
                continue;
            }
            let ok = c.status != Status::Fail;
            let (first, changed, entry) = state.canary.record(id.as_str(), c, ok);
            state.metrics.canary(
                id.as_str(),
                c.id,
                ok,
                entry.last_success_ms.map(|ms| ms as f64 / 1000.0),
            );
            match (first, changed, ok) {
                (_, Some(_), true) => {
                    tracing::info!(tenant = %id, check = c.id, saw = %c.saw, "canary check passes again")
                }
                (_, Some(_), false) | (true, None, false) => tracing::error!(
                    tenant = %id,
                    check = c.id,
                    saw = %c.saw,
                    fix = c.fix.as_deref().unwrap_or(""),
                    "canary check fails"
                ),
                (true, None, true) => {
                    tracing::info!(tenant = %id, check = c.id, "canary check passes")
                }
                _ => {}
            }
        }
    }
}
