//! Health, readiness, metrics, request ids, shutdown.
