//! `wipehook doctor`: prove a deployment works before the first incident.
//! For each configured tenant, in order, read-only checks of everything
//! outside wipehook's code that a containment depends on: the configuration
//! and its cloud, the inbound app registration and the playbooks'
//! identities, wipehook's outbound tokens and the roles they carry, Exchange
//! (the canary mailbox's answer, field by field, and wipehook's Exchange
//! RBAC), Sentinel (workspace, incident list, Responder), the clock, the
//! store. Each check says what it checked, what it saw and the exact fix.
//!
//! Nothing here writes to a tenant: the only calls are Entra token requests,
//! Graph and ARM GETs, and Exchange `Get-*` cmdlets through the `exchange`
//! module, whose `Command` cannot express anything else from here. The
//! store's write latency is measured on a rolled-back transaction.
//!
//! The Exchange and Sentinel checks (`probes`) also run inside the service,
//! every `doctor.canary_interval` (`canary`).

pub mod canary;
mod inbound;
mod local;
mod outbound;
pub mod probes;

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, Settings};

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Skipped: nothing to check (with the reason), or a check an earlier
    /// failure made impossible.
    Skip,
    /// Works, but something is off, or could not be checked from here.
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the checklist.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable id (`exchange.mobile_device`): the canary's `check` label and
    /// the docs/operations.md entry that explains it.
    pub id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What the check was about when there are several of its kind (an
    /// audience, a caller, a workspace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub status: Status,
    /// What is checked, in one line.
    pub title: String,
    /// How: the request, cmdlet or file read.
    pub checked: String,
    /// What came back.
    pub saw: String,
    /// The exact fix (portal blade, PowerShell or az line, docs section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(id: &'static str, title: impl Into<String>) -> Check {
        Check {
            id,
            tenant: None,
            subject: None,
            status: Status::Pass,
            title: title.into(),
            checked: String::new(),
            saw: String::new(),
            fix: None,
        }
    }
    pub fn tenant(mut self, t: impl ToString) -> Check {
        self.tenant = Some(t.to_string());
        self
    }
    pub fn subject(mut self, s: impl Into<String>) -> Check {
        self.subject = Some(s.into());
        self
    }
    pub fn checked(mut self, c: impl Into<String>) -> Check {
        self.checked = c.into();
        self
    }
    pub fn pass(mut self, saw: impl Into<String>) -> Check {
        self.status = Status::Pass;
        self.saw = saw.into();
        self
    }
    pub fn skip(mut self, saw: impl Into<String>) -> Check {
        self.status = Status::Skip;
        self.saw = saw.into();
        self
    }
    pub fn warn(mut self, saw: impl Into<String>, fix: impl Into<String>) -> Check {
        self.status = Status::Warn;
        self.saw = saw.into();
        self.fix = Some(fix.into());
        self
    }
    pub fn fail(mut self, saw: impl Into<String>, fix: impl Into<String>) -> Check {
        self.status = Status::Fail;
        self.saw = saw.into();
        self.fix = Some(fix.into());
        self
    }
}

/// The checklist.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub ok: bool,
    pub passed: usize,
    pub warnings: usize,
    pub failed: usize,
    pub skipped: usize,
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Report {
        let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
        Report {
            version: env!("CARGO_PKG_VERSION"),
            ok: n(Status::Fail) == 0,
            passed: n(Status::Pass),
            warnings: n(Status::Warn),
            failed: n(Status::Fail),
            skipped: n(Status::Skip),
            checks,
        }
    }

    /// 0 only when nothing failed.
    pub fn exit_code(&self) -> u8 {
        if self.ok { 0 } else { 1 }
    }

    /// The checklist for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section: Option<Option<String>> = None;
        for c in &self.checks {
            if section.as_ref() != Some(&c.tenant) {
                out.push('\n');
                out.push_str(&match &c.tenant {
                    Some(t) => format!("tenant {t}\n"),
                    None => "wipehook\n".to_string(),
                });
                section = Some(c.tenant.clone());
            }
            let tag = match c.status {
                Status::Pass => "PASS",
                Status::Skip => "SKIP",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let subject = c
                .subject
                .as_ref()
                .map(|s| format!(" [{s}]"))
                .unwrap_or_default();
            out.push_str(&format!("  {tag}  {:<24} {}{subject}\n", c.id, c.title));
            for (label, text) in [("checked", &c.checked), ("saw", &c.saw)] {
                if !text.is_empty() {
                    out.push_str(&indent(label, text));
                }
            }
            if let Some(f) = &c.fix {
                out.push_str(&indent("fix", f));
            }
        }
        out.push_str(&format!(
            "\n{} passed, {} warning(s), {} failed, {} skipped: {}\n",
            self.passed,
            self.warnings,
            self.failed,
            self.skipped,
            if self.ok {
                "nothing failed"
            } else {
                "FAILED (exit code 1)"
            }
        ));
        out
    }
}

fn indent(label: &str, text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let head = if i == 0 {
            format!("{label}:")
        } else {
            String::new()
        };
        out.push_str(&format!("        {head:<9}{line}\n"));
    }
    out
}

/// Load the configuration (a failure is the first, failing check) and run
/// every check.
pub async fn run_file(path: Option<&Path>) -> Report {
    match Settings::load(path) {
        Ok(config) => run(config).await,
        Err(e) => Report::of(vec![local::invalid(path, &e)]),
    }
}

/// Every check, in order, for every tenant.
pub async fn run(config: Config) -> Report {
    let mut checks = vec![local::valid(&config), local::cloud(&config)];
    match outbound::Clients::new(&config) {
        Ok(clients) => {
            for tenant in &config.tenants {
                checks.extend(tenant_checks(&config, &clients, tenant).await);
            }
        }
        Err(e) => checks.push(
            Check::new("config.valid", "outbound HTTP clients can be built")
                .checked("cloud.extra_ca_file and the TLS configuration")
                .fail(
                    format!("{e:#}"),
                    "fix cloud.extra_ca_file (a PEM file of CA certificates) or remove it",
                ),
        ),
    }
    checks.extend(local::store(&config).await);
    Report::of(checks)
}

async fn tenant_checks(
    config: &Config,
    clients: &outbound::Clients,
    tenant: &crate::config::Tenant,
) -> Vec<Check> {
    let mut checks = vec![];
    let discovery = inbound::openid(config, clients, tenant, &mut checks).await;
    let tokens = outbound::provider(config, clients, tenant);
    let api = inbound::audiences(config, clients, tenant, tokens.as_ref().ok(), &mut checks).await;
    inbound::callers(
        config,
        clients,
        tenant,
        tokens.as_ref().ok(),
        api.as_ref(),
        &mut checks,
    )
    .await;
    let Ok(tokens) = tokens else {
        let e = tokens.err().unwrap_or_default();
        for (id, what) in [
            ("token.exchange", "Exchange"),
            ("token.arm", "ARM"),
            ("token.graph", "Graph"),
        ] {
            checks.push(
                Check::new(
                    id,
                    format!("a token for {what} with the tenant's credential"),
                )
                .tenant(&tenant.id)
                .checked("building the tenant's credential")
                .fail(e.clone(), outbound::credential_fix(tenant)),
            );
        }
        checks.push(inbound::clock(config, tenant, discovery.as_ref()));
        return checks;
    };
    outbound::tokens(tenant, &tokens, &mut checks).await;
    let u = probes::Upstream {
        exchange: &clients.exchange,
        arm: &clients.arm,
        tokens: &tokens,
        tenant,
    };
    checks.extend(probes::exchange(&u).await);
    checks.extend(probes::sentinel(&u).await);
    checks.push(outbound::graph_security(tenant, &tokens).await);
    checks.push(outbound::graph_account_steps(tenant, &tokens).await);
    checks.push(inbound::clock(config, tenant, discovery.as_ref()));
    checks
}
