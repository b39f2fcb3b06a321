//! One integration-test binary: every module drives the real service over
//! HTTP against the simulated tenant.

mod helpers;

mod auth;
mod exactly_once;
mod openapi;
mod operations;
mod pipeline;
mod playbook_bodies;
mod safety;
