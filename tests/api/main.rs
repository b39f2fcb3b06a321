//! One integration-test binary: every module drives the real service over
//! HTTP against the simulated tenant.
#![recursion_limit = "256"]

mod browser;
mod helpers;

mod auth;
mod beyond;
mod chaos;
mod defender_paths;
mod doctor;
mod exactly_once;
mod exchange_facts;
mod guard;
mod hardening;
mod identity;
mod openapi;
mod operations;
mod pipeline;
mod playbook_bodies;
mod record;
mod safety;
mod store_contract;
