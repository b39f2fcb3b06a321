//! Never twice, never lost (exactly-once issue).
