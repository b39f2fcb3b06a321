//! Configuration: one TOML file (`--config PATH`, else the whole file inline
//! in `WIPEHOOK_CONFIG_TOML`, else the path in `WIPEHOOK_CONFIG`), then environment variables
//! `WIPEHOOK_<SECTION>__<KEY>` (numeric segments index arrays:
//! `WIPEHOOK_TENANTS__0__ID`). Secrets are never in the file: the file names
//! the environment variable that holds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::domain::Mode;
use crate::domain::{Severity, TenantId, Upn, WorkspaceRef};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub cloud: CloudSettings,
    #[serde(default)]
    pub inbound: InboundSettings,
    #[serde(default)]
    pub tenants: Vec<TenantSettings>,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub worker: WorkerSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    /// Base of the `Location` header and of links in comments.
    pub public_url: String,
    pub body_limit_bytes: usize,
    /// How long a graceful shutdown waits for in-flight work.
    #[serde(with = "dur")]
    pub shutdown_grace: Duration,
    /// `Retry-After` sent with 202 answers (Logic Apps polls this often).
    pub poll_after_secs: u64,
}
impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "0.0.0.0:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            body_limit_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(20),
            poll_after_secs: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://path` (embedded default) or `postgres://...` (several replicas).
    pub url: String,
    pub max_connections: u32,
    /// Finished runs are the audit record.
    #[serde(with = "dur")]
    pub run_retention: Duration,
    #[serde(with = "dur")]
    pub delivery_retention: Duration,
    /// A claimed task is owned this long unless its worker renews the lease.
    #[serde(with = "dur")]
    pub lease: Duration,
    /// SQLite only: "full" (a commit survives power loss) or "normal" (it
    /// survives a killed process; the last commits can be lost on power loss).
    pub sqlite_synchronous: String,
}
impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://wipehook.db".into(),
            max_connections: 8,
            run_retention: Duration::from_secs(90 * 86400),
            delivery_retention: Duration::from_secs(7 * 86400),
            lease: Duration::from_secs(30),
            sqlite_synchronous: "full".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CloudSettings {
    /// Preset: `public`, `usgov`, `china`. Every URL below overrides it.
    pub name: Option<String>,
    pub authority_host: Option<String>,
    pub exchange_url: Option<String>,
    pub arm_url: Option<String>,
    pub graph_url: Option<String>,
    /// Resource identifiers tokens are requested for (not where requests go).
    pub exchange_resource: Option<String>,
    pub arm_resource: Option<String>,
    pub graph_resource: Option<String>,
    /// PEM file of extra CA certificates trusted for outbound TLS.
    pub extra_ca_file: Option<PathBuf>,
    /// ARM api-version for incident comments and entities.
    pub sentinel_api_version: Option<String>,
}

/// The cloud after presets are applied: every value present.
#[derive(Clone, Debug, Serialize)]
pub struct Cloud {
    pub name: String,
    pub authority_host: String,
    pub exchange_url: String,
    pub arm_url: String,
    pub graph_url: String,
    pub exchange_resource: String,
    pub arm_resource: String,
    pub graph_resource: String,
    pub extra_ca_file: Option<PathBuf>,
    pub sentinel_api_version: String,
}

impl CloudSettings {
    pub fn resolve(&self) -> Result<Cloud, String> {
        let name = self.name.clone().unwrap_or_else(|| "public".into());
        // Sovereign values are from public documentation; the Exchange hosts
        // of usgov/china are unverified (the team's Exchange research, §1.3).
        let (auth, exo, arm, graph) = match name.as_str() {
            "public" => (
                "https://login.microsoftonline.com",
                "https://outlook.office365.com",
                "https://management.azure.com",
                "https://graph.microsoft.com",
            ),
            "usgov" => (
                "https://login.microsoftonline.us",
                "https://outlook.office365.us",
                "https://management.usgovcloudapi.net",
                "https://graph.microsoft.us",
            ),
            "china" => (
                "https://login.chinacloudapi.cn",
                "https://partner.outlook.cn",
                "https://management.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
            other => {
                return Err(format!(
                    "cloud.name '{other}' is not one of public, usgov, china"
                ));
            }
        };
        let pick = |v: &Option<String>, d: &str| {
            v.clone()
                .unwrap_or_else(|| d.to_string())
                .trim_end_matches('/')
                .to_string()
        };
        let cloud = Cloud {
            name,
            authority_host: pick(&self.authority_host, auth),
            exchange_url: pick(&self.exchange_url, exo),
            arm_url: pick(&self.arm_url, arm),
            graph_url: pick(&self.graph_url, graph),
            exchange_resource: pick(&self.exchange_resource, exo),
            arm_resource: pick(&self.arm_resource, arm),
            graph_resource: pick(&self.graph_resource, graph),
            extra_ca_file: self.extra_ca_file.clone(),
            sentinel_api_version: self
                .sentinel_api_version
                .clone()
                .unwrap_or_else(|| "2025-09-01".into()),
        };
        for (k, v) in [
            ("authority_host", &cloud.authority_host),
            ("exchange_url", &cloud.exchange_url),
            ("arm_url", &cloud.arm_url),
            ("graph_url", &cloud.graph_url),
        ] {
            let u =
                reqwest::Url::parse(v).map_err(|e| format!("cloud.{k} '{v}' is not a URL: {e}"))?;
            if u.scheme() != "https" && u.scheme() != "http" {
                return Err(format!("cloud.{k} must be http(s)"));
            }
        }
        if !cloud.authority_host.starts_with("https://") {
            return Err(
                "cloud.authority_host must use https (Entra and azure_identity require it)".into(),
            );
        }
        Ok(cloud)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundSettings {
    pub audiences: Vec<String>,
    /// Object ids (`oid`) of the playbooks' managed identities.
    pub allowed_callers: Vec<String>,
    pub required_role: Option<String>,
    /// Role needed to approve or cancel a run (defaults to `required_role`).
    pub approver_role: Option<String>,
    pub leeway_secs: u64,
    /// An unknown `kid` refetches the tenant's keys at most this often.
    #[serde(with = "dur")]
    pub key_refresh_interval: Duration,
}
impl Default for InboundSettings {
    fn default() -> Self {
        InboundSettings {
            key_refresh_interval: Duration::from_secs(60),
            audiences: vec![],
            allowed_callers: vec![],
            required_role: None,
            approver_role: None,
            leeway_secs: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub id: String,
    #[serde(default)]
    pub workspaces: Vec<String>,
    pub credential: CredentialSettings,
    #[serde(default)]
    pub policy: PolicyOverrides,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialSettings {
    ClientSecret {
        client_id: String,
        client_secret_env: String,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    WorkloadIdentity {
        client_id: Option<String>,
        token_file: Option<PathBuf>,
    },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    pub mode: Mode,
    pub notification_emails: Vec<String>,
    /// UPNs or patterns with `*` that are never wiped automatically.
    pub protected_upns: Vec<String>,
    /// Required: a UPN outside these domains is refused. Empty refuses all.
    pub allowed_domains: Vec<String>,
    pub min_severity: Option<Severity>,
    pub max_targets_per_run: usize,
    pub max_wipes_per_hour: usize,
    pub client_types: Vec<String>,
    #[serde(with = "dur")]
    pub hold_expiry: Duration,
    #[serde(with = "dur")]
    pub verify_deadline: Duration,
    /// First follow-up of a requested wipe; doubles up to 15 minutes.
    #[serde(with = "dur")]
    pub verify_interval: Duration,
}
impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            mode: Mode::Enforce,
            notification_emails: vec![],
            protected_upns: vec![],
            allowed_domains: vec![],
            min_severity: None,
            max_targets_per_run: 10,
            max_wipes_per_hour: 50,
            client_types: vec!["EAS".into(), "Outlook".into(), "REST".into()],
            hold_expiry: Duration::from_secs(24 * 3600),
            verify_deadline: Duration::from_secs(24 * 3600),
            verify_interval: Duration::from_secs(60),
        }
    }
}

/// `[tenants.policy]`: any key of `[policy]`, for one tenant.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOverrides {
    pub mode: Option<Mode>,
    pub notification_emails: Option<Vec<String>>,
    pub protected_upns: Option<Vec<String>>,
    pub allowed_domains: Option<Vec<String>>,
    pub min_severity: Option<Severity>,
    pub max_targets_per_run: Option<usize>,
    pub client_types: Option<Vec<String>>,
    #[serde(default, with = "opt_dur")]
    pub hold_expiry: Option<Duration>,
    #[serde(default, with = "opt_dur")]
    pub verify_deadline: Option<Duration>,
}

impl PolicySettings {
    pub fn with_overrides(&self, o: &PolicyOverrides) -> PolicySettings {
        let mut p = self.clone();
        if let Some(v) = o.mode {
            p.mode = v;
        }
        if let Some(v) = &o.notification_emails {
            p.notification_emails = v.clone();
        }
        if let Some(v) = &o.protected_upns {
            p.protected_upns = v.clone();
        }
        if let Some(v) = &o.allowed_domains {
            p.allowed_domains = v.clone();
        }
        if o.min_severity.is_some() {
            p.min_severity = o.min_severity;
        }
        if let Some(v) = o.max_targets_per_run {
            p.max_targets_per_run = v;
        }
        if let Some(v) = &o.client_types {
            p.client_types = v.clone();
        }
        if let Some(v) = o.hold_expiry {
            p.hold_expiry = v;
        }
        if let Some(v) = o.verify_deadline {
            p.verify_deadline = v;
        }
        p
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Tasks executed at once by this process.
    pub slots: usize,
    /// Adaptive Exchange concurrency per tenant: start, floor 1, ceiling.
    pub exchange_initial_concurrency: usize,
    pub exchange_max_concurrency: usize,
    /// Fallback poll for work claimed by no one (other replicas, expired leases).
    #[serde(with = "dur")]
    pub idle_poll: Duration,
    /// Attempts of a task before it is given up (comment writes never give up).
    pub max_attempts: u32,
    /// Scale of every retry delay (1.0 in production; tests shrink it).
    pub backoff_scale: f64,
}
impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            slots: 32,
            exchange_initial_concurrency: 4,
            exchange_max_concurrency: 16,
            idle_poll: Duration::from_secs(2),
            max_attempts: 8,
            backoff_scale: 1.0,
        }
    }
}

/// A configured tenant, parsed.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: TenantId,
    pub workspaces: Vec<WorkspaceRef>,
    pub credential: CredentialSettings,
    pub policy: PolicySettings,
}

impl Settings {
    /// Load: file (or inline TOML), then environment overrides, then checks.
    pub fn load(path: Option<&Path>) -> Result<Settings, String> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    pub fn load_from(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Settings, String> {
        let text = match (
            path,
            env.get("WIPEHOOK_CONFIG"),
            env.get("WIPEHOOK_CONFIG_TOML"),
        ) {
            // --config PATH, then inline content (a container platform's
            // secret), then WIPEHOOK_CONFIG (the image sets a default path).
            (Some(p), _, _) => read(p)?,
            (None, _, Some(inline)) if !inline.trim().is_empty() => inline.clone(),
            (None, Some(p), _) if !p.is_empty() => read(Path::new(p))?,
            _ => String::new(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("configuration is not valid TOML: {e}"))?;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("WIPEHOOK_") else {
                continue;
            };
            if !rest.contains("__") {
                continue; // WIPEHOOK_CONFIG, secret variables, ...
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, env_value(v))
                .map_err(|e| format!("environment variable {k}: {e}"))?;
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("configuration: {e}"))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        self.cloud.resolve()?;
        self.tenants()?;
        reqwest::Url::parse(&self.server.public_url).map_err(|e| {
            format!(
                "server.public_url '{}' is not a URL: {e}",
                self.server.public_url
            )
        })?;
        if !self.store.url.starts_with("sqlite:") && !self.store.url.starts_with("postgres") {
            return Err("store.url must start with sqlite: or postgres://".into());
        }
        if self.worker.slots == 0 || self.worker.exchange_max_concurrency == 0 {
            return Err(
                "worker.slots and worker.exchange_max_concurrency must be at least 1".into(),
            );
        }
        for p in std::iter::once(self.policy.clone())
            .chain(self.tenants()?.into_iter().map(|t| t.policy))
        {
            for c in &p.client_types {
                if !["eas", "outlook", "rest"].contains(&c.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "policy.client_types: '{c}' is not one of EAS, Outlook, REST"
                    ));
                }
            }
        }
        if !self.worker.backoff_scale.is_finite() || self.worker.backoff_scale < 0.0 {
            return Err("worker.backoff_scale must be a number >= 0".into());
        }
        Ok(())
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>, String> {
        let mut out = vec![];
        for t in &self.tenants {
            let id = TenantId::parse(&t.id)?;
            let workspaces = t
                .workspaces
                .iter()
                .map(|w| WorkspaceRef::parse(w))
                .collect::<Result<Vec<_>, _>>()?;
            let policy = self.policy.with_overrides(&t.policy);
            for d in &policy.allowed_domains {
                if d.contains('@') || !d.contains('.') {
                    return Err(format!("policy.allowed_domains: '{d}' is not a domain"));
                }
            }
            for e in &policy.notification_emails {
                Upn::parse(e).map_err(|e| format!("policy.notification_emails: {e}"))?;
            }
            if let CredentialSettings::ClientSecret {
                client_secret_env, ..
            } = &t.credential
                && client_secret_env.is_empty()
            {
                return Err(format!(
                    "tenant {id}: client_secret_env must name an environment variable"
                ));
            }
            out.push(Tenant {
                id,
                workspaces,
                credential: t.credential.clone(),
                policy,
            });
        }
        Ok(out)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut s = self.clone();
        s.store.url = redact_url(&s.store.url);
        let mut v =
            toml::Value::try_from(&s).unwrap_or(toml::Value::String("<unprintable>".into()));
        if let Ok(cloud) = self.cloud.resolve()
            && let Some(t) = v.as_table_mut()
        {
            t.insert(
                "cloud".into(),
                toml::Value::try_from(&cloud).unwrap_or(toml::Value::String(String::new())),
            );
        }
        toml::to_string_pretty(&v).unwrap_or_default()
    }
}

/// Replace the password of a URL with `***`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read configuration file {}: {e}", p.display()))
}

fn env_value(raw: &str) -> toml::Value {
    // A TOML literal (number, bool, array, inline table) when it parses as one,
    // else the plain string.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let entry = table.entry(head.clone()).or_insert_with(|| {
        if rest[0].parse::<usize>().is_ok() {
            toml::Value::Array(vec![])
        } else {
            toml::Value::Table(Default::default())
        }
    });
    set_value_path(entry, rest, value)
}

fn set_value_path(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => set_path(t, path, value),
        toml::Value::Array(a) => {
            let i: usize = path[0]
                .parse()
                .map_err(|_| format!("'{}' is not an array index", path[0]))?;
            while a.len() <= i {
                a.push(toml::Value::Table(Default::default()));
            }
            if path.len() == 1 {
                a[i] = value;
                Ok(())
            } else {
                set_value_path(&mut a[i], &path[1..], value)
            }
        }
        _ => Err(format!("'{}' is not a table", path[0])),
    }
}

/// Parse "90d", "24h", "30m", "15s", "250ms" (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30s, 15m, 24h, 90d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("'{s}' is not a duration like 30s, 15m, 24h, 90d")),
    };
    if !(0.0..=1e10).contains(&secs) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 86_400_000 == 0 && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse_duration(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => Duration::try_from_secs_f64(n)
                .map_err(|_| serde::de::Error::custom(format!("{n} is not a duration in seconds"))),
        }
    }
}

mod opt_dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_index_arrays() {
        let dir = std::env::temp_dir().join(format!("wh-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            r#"
[server]
listen = "127.0.0.1:1"
[[tenants]]
id = "11111111-1111-1111-1111-111111111111"
credential = { kind = "client_secret", client_id = "c", client_secret_env = "X_SECRET" }
[policy]
hold_expiry = "2h"
"#,
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            ("WIPEHOOK_SERVER__LISTEN", "127.0.0.1:9"),
            ("WIPEHOOK_POLICY__MAX_TARGETS_PER_RUN", "3"),
            ("WIPEHOOK_POLICY__ALLOWED_DOMAINS", r#"["contoso.com"]"#),
            ("WIPEHOOK_TENANTS__0__WORKSPACES", r#"["/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"]"#),
            ("WIPEHOOK_CLIENT_SECRET", "not-a-key"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = Settings::load_from(Some(&p), &env).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:9");
        assert_eq!(s.policy.max_targets_per_run, 3);
        assert_eq!(s.policy.hold_expiry, Duration::from_secs(7200));
        assert_eq!(s.tenants().unwrap()[0].workspaces.len(), 1);
        assert_eq!(s.policy.allowed_domains, vec!["contoso.com"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let env = BTreeMap::new();
        let bad = |toml: &str| {
            let dir = std::env::temp_dir().join(format!("wh-cfg-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("c.toml");
            std::fs::write(&p, toml).unwrap();
            Settings::load_from(Some(&p), &env).unwrap_err()
        };
        assert!(bad("[server]\nlisen = 1").contains("lisen"));
        assert!(bad("[cloud]\nname = \"mars\"").contains("mars"));
        assert!(bad("[policy]\nmode = \"yolo\"").contains("yolo"));
        assert!(bad("[cloud]\nauthority_host = \"http://127.0.0.1:1\"").contains("https"));
    }

    #[test]
    fn redaction_and_durations() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(86400)), "1d");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// docs/config.example.toml loads, and documents every key there is.
    #[test]
    fn the_example_is_valid_and_complete() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let s = Settings::load_from(Some(Path::new(path)), &BTreeMap::new())
            .expect("the example loads");
        assert_eq!(s.tenants().unwrap().len(), 1);
        let mut full = s.clone();
        full.cloud.extra_ca_file = Some("/x".into());
        full.policy.min_severity = Some(Severity::High);
        let v = toml::Value::try_from(&full).unwrap();
        let mut missing = vec![];
        fn walk(v: &toml::Value, text: &str, missing: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, child) in t {
                    if !text.contains(&format!("{k} ="))
                        && !text.contains(&format!("[{k}]"))
                        && !text.contains(&format!("[[{k}]]"))
                    {
                        missing.push(k.clone());
                    }
                    walk(child, text, missing);
                }
            } else if let toml::Value::Array(a) = v {
                for c in a {
                    walk(c, text, missing);
                }
            }
        }
        walk(&v, &text, &mut missing);
        assert!(
            missing.is_empty(),
            "keys not documented in docs/config.example.toml: {missing:?}"
        );
    }
}

#[cfg(test)]
mod precedence_tests {
    use super::*;

    #[test]
    fn inline_configuration_wins_over_the_image_default_path() {
        let env: BTreeMap<String, String> = [
            ("WIPEHOOK_CONFIG", "/nonexistent/config.toml"),
            (
                "WIPEHOOK_CONFIG_TOML",
                "[server]\nlisten = \"127.0.0.1:7\"\n",
            ),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = Settings::load_from(None, &env).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:7");
        let only_path: BTreeMap<String, String> = [(
            "WIPEHOOK_CONFIG".to_string(),
            "/nonexistent/config.toml".to_string(),
        )]
        .into_iter()
        .collect();
        assert!(
            Settings::load_from(None, &only_path)
                .unwrap_err()
                .contains("/nonexistent/config.toml")
        );
    }
}
