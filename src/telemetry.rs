//! Logs: JSON lines on stdout with the fields of the enclosing spans (the
//! run id, incident number and tenant of a task; the request id of a call).
//! Tokens and secrets are never recorded as fields.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Install the global subscriber once. `default_level` applies when
/// `RUST_LOG` is unset.
pub fn init(default_level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},sqlx=warn,actix_server=warn,azure_core=warn,azure_identity=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stdout);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
