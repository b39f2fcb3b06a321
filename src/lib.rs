//! wipehook: contain a compromised Microsoft 365 account from a Sentinel
//! playbook. A guided tour, in the order data flows (docs/ARCHITECTURE.md
//! has the map, the states and the invariants):

/// Inbound authentication: the playbook's Entra token, verified.
pub mod auth;
/// `wipehook bench`.
#[cfg(feature = "demo")]
pub mod bench;
/// The command line.
pub mod cli;
/// Layered configuration, cloud presets, durations.
pub mod config;
/// Approve and cancel, below the HTTP layer.
pub mod control;
/// `wipehook demo`.
#[cfg(feature = "demo")]
pub mod demo;
/// `wipehook doctor` (read-only checks of a deployment) and the service's canary.
pub mod doctor;
/// Identifiers, the stored words and their state machines, jobs, people,
/// devices: parsed once at the edge, valid afterwards. Depends on nothing.
pub mod domain;
/// The only module that knows Exchange's InvokeCommand; its limiter.
pub mod exchange;
/// Microsoft Graph: who a person is.
pub mod graph;
/// Wiring to the simulated tenant (tests, demo, benchmark).
#[cfg(feature = "demo")]
pub mod harness;
/// Outbound tokens, one credential per tenant.
pub mod identity;
/// A trigger body becomes a durable run: the delivery key, the policy that
/// needs no upstream, one transaction with the run's first tasks.
pub mod intake;
/// Prometheus families.
pub mod metrics;
/// Pure safety decisions: who may be contained, which device may be wiped.
pub mod policy;
/// `wipehook replay`: the decisions for a saved trigger body, offline.
pub mod replay;
/// The read model: a run's result, for the API and the comment.
pub mod report;
/// HTTP: the route table, the error type, the handlers (no upstream client).
pub mod routes;
/// The only module that knows Sentinel JSON: trigger bodies and entities
/// become `Trigger` and `Candidate`; the ARM client; the comment's HTML.
pub mod sentinel;
/// Binding, serving, stopping.
pub mod startup;
/// What the HTTP side and the worker side hold.
pub mod state;
/// The durable store by aggregate (runs, targets, ledger, queue), one SQL
/// text for SQLite and PostgreSQL.
pub mod store;
/// JSON logs.
pub mod telemetry;
/// What every outbound call shares: pooled clients, `CallError`, backoff.
pub mod upstream;
/// The worker: a runner that claims tasks under leases, and one room per job.
pub mod worker;
