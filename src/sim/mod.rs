//! Simulated tenant (placeholder).
