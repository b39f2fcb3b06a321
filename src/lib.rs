//! wipehook: contain a compromised Microsoft 365 account from a Sentinel playbook.
pub mod sim;
pub mod config;
pub mod domain;
pub mod store;
pub mod identity;
pub mod upstream;
pub mod sentinel;
pub mod exchange;
pub mod metrics;
