//! Housekeeping: reachability, the schema version, retention, and the
//! figures `/metrics` shows.

use std::time::Duration;

use anyhow::Result;

use super::{Store, dispatch};
use crate::domain::RunStatus;

#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub runs_by_status: Vec<(RunStatus, i64)>,
    pub ready_tasks: i64,
    pub oldest_ready_ms: Option<i64>,
    /// Age of the oldest unfinished work task (contain, resolve, entities),
    /// retries and backoff included: how long a run has been held open.
    pub oldest_work_ms: Option<i64>,
    pub held_runs: i64,
    pub dead_tasks: i64,
}

impl Store {
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    /// The schema version this store is at.
    pub async fn schema_version(&self) -> Result<i64> {
        dispatch!(self, schema_version())
    }

    /// Delete finished runs older than the retention, and old delivery keys.
    pub async fn prune(
        &self,
        run_retention: Duration,
        delivery_retention: Duration,
    ) -> Result<(u64, u64)> {
        dispatch!(self, prune(run_retention, delivery_retention))
    }

    /// How long the write path takes, rolled back (nothing is kept):
    /// `wipehook doctor`'s write latency.
    pub async fn write_latency(&self) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        dispatch!(self, write_probe())?;
        Ok(started.elapsed())
    }

    pub async fn stats(&self) -> Result<StoreStats> {
        dispatch!(self, stats())
    }

    /// `wipehook bench --scenario store-1m` only: `n` finished runs of
    /// `tenant` (with targets, devices, wipes, tasks, records), generated in
    /// the store in one transaction.
    pub async fn fill_history(&self, tenant: &str, workspace: &str, n: i64) -> Result<()> {
        dispatch!(self, fill_history(tenant, workspace, n))
    }

    /// The database's plan for the worker's claim (`EXPLAIN`).
    pub async fn explain_claim(&self) -> Result<Vec<String>> {
        dispatch!(self, explain_claim())
    }
}
