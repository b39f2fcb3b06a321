//! What every outbound call shares: the pooled HTTP clients, the error that
//! tells the worker whether to retry, and backoff arithmetic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// An outbound call's failure, classified once where the response is read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// Worth retrying later (throttling, 5xx, network, token refresh).
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (4xx, a refusal with a reason).
    #[error("{reason}")]
    Permanent { reason: String },
}

impl CallError {
    pub fn transient(reason: impl Into<String>) -> CallError {
        CallError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> CallError {
        CallError::Permanent {
            reason: reason.into(),
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            CallError::Transient { reason, .. } | CallError::Permanent { reason } => reason,
        }
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient { .. })
    }
    pub fn from_reqwest(what: &str, e: reqwest::Error) -> CallError {
        // The Display of a reqwest error hides the cause; keep the chain.
        let mut msg = format!("{what}: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        CallError::transient(msg)
    }
}

/// The answer to a read that may find nothing or be refused, kept apart
/// (what `wipehook doctor` reports differs: a missing object is a
/// misconfiguration, a refusal is a missing permission of the reader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// 404: the upstream's message.
    Missing(String),
    /// 401/403: the upstream's message.
    Denied(String),
}

/// The kill switch as this process last saw it, shared by the worker's
/// Exchange client (which checks it after a call's limiter slot is granted,
/// just before a wipe goes on the wire) and whoever learns of a change: the
/// call that throws it here, and the worker's poll of the store (every
/// `worker.idle_poll`) for the other replicas' throws.
#[derive(Clone, Debug, Default)]
pub struct Brake(Arc<std::sync::atomic::AtomicBool>);

impl Brake {
    pub fn engaged(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn set(&self, engaged: bool) {
        self.0.store(engaged, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The clients of one process: one pool per upstream, so a slow ARM does not
/// hold connections Exchange needs.
#[derive(Clone, Debug)]
pub struct HttpClients {
    pub entra: reqwest::Client,
    pub exchange: reqwest::Client,
    pub arm: reqwest::Client,
    pub graph: reqwest::Client,
}

impl HttpClients {
    pub fn new(extra_ca_file: Option<&Path>) -> Result<HttpClients> {
        let certs = match extra_ca_file {
            Some(p) => {
                let pem = std::fs::read(p)
                    .with_context(|| format!("cannot read cloud.extra_ca_file {}", p.display()))?;
                reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                    format!(
                        "cloud.extra_ca_file {} holds no PEM certificate",
                        p.display()
                    )
                })?
            }
            None => vec![],
        };
        let build = |timeout: Duration| -> Result<reqwest::Client> {
            Ok(reqwest::Client::builder()
                .user_agent(concat!("wipehook/", env!("CARGO_PKG_VERSION")))
                .tls_certs_merge(certs.clone())
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .redirect(reqwest::redirect::Policy::none())
                .build()?)
        };
        Ok(HttpClients {
            entra: build(Duration::from_secs(30))?,
            // Exchange's REST cmdlets time out server-side at 15 minutes; ours
            // are single-mailbox calls, so 120 s is already generous.
            exchange: build(Duration::from_secs(120))?,
            arm: build(Duration::from_secs(60))?,
            graph: build(Duration::from_secs(30))?,
        })
    }
}

/// Exponential backoff with a little jitter: base × 2^attempt, capped.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let d = exp.min(cap);
    // ±10 % jitter from the clock's nanoseconds: no RNG needed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = (nanos % 200) as f64 / 1000.0 - 0.1;
    d.mul_f64(1.0 + jitter)
}

/// `Retry-After` as Exchange sends it: decimal seconds (or an HTTP date, ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(3600.0)))
}
