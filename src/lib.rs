//! wipehook: contain a compromised Microsoft 365 account from a Sentinel playbook.
pub mod sim;
