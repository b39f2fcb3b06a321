//! Configuration: one TOML file (`--config PATH`, else the whole file inline
//! in `WIPEHOOK_CONFIG_TOML`, else the path in `WIPEHOOK_CONFIG`), then environment variables
//! `WIPEHOOK_<SECTION>__<KEY>` (numeric segments index arrays:
//! `WIPEHOOK_TENANTS__0__ID`). Secrets are never in the file: the file names
//! the environment variable that holds them (the store URL's password, the
//! one secret a URL can carry, never prints: `StoreUrl`).
//!
//! `Settings` is the file as written; `Config::new` validates it once and
//! parses what the service needs parsed (the cloud, the tenants with their
//! effective policies), so nothing downstream parses it again.

mod cloud;
mod duration;
mod load;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::domain::Mode;
use crate::domain::{AccountStep, ContainmentOrder, Severity, TenantId, Upn, WorkspaceRef};
pub use cloud::{Cloud, CloudSettings, cloud_instance_names, clouds_of_host};
use duration::{dur, opt_dur};
pub use duration::{format_duration, parse_duration};

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
    #[serde(default)]
    pub record: RecordSettings,
    #[serde(default)]
    pub doctor: DoctorSettings,
    #[serde(default)]
    pub guard: GuardSettings,
}

/// The service-wide brakes on destructive steps.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// `true` stops every wipe of every tenant, on every replica that reads
    /// this file, whatever the stored switch says (lifting it means changing
    /// the file); the authenticated call `POST /api/v1/kill-switch` engages
    /// and lifts the stored one.
    pub kill_switch: bool,
    /// Wipe requests per rolling hour for the whole service, every tenant
    /// together (each tenant also has `policy.max_wipes_per_hour`).
    pub max_wipes_per_hour: usize,
}
impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            kill_switch: false,
            max_wipes_per_hour: 200,
        }
    }
}

/// The record on the incident.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordSettings {
    /// The approve playbook's deployment name, named in held records.
    pub approve_playbook: String,
    /// The cancel playbook's deployment name, named as the undo path.
    pub cancel_playbook: String,
    /// Comments one run writes at most (the last always states the final truth).
    pub max_comments_per_run: usize,
}
impl Default for RecordSettings {
    fn default() -> Self {
        RecordSettings {
            approve_playbook: "Wipehook-Approve-Run".into(),
            cancel_playbook: "Wipehook-Cancel-Run".into(),
            max_comments_per_run: 10,
        }
    }
}

/// `wipehook doctor` and the service's canary.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoctorSettings {
    /// A mailbox with a mobile device whose `Get-MobileDevice` and
    /// statistics the doctor and the canary read (never wiped), for every
    /// tenant without its own `canary_upn`.
    pub canary_upn: Option<String>,
    /// How often the service repeats the read-only Exchange and ARM checks
    /// (0 turns the canary off).
    #[serde(with = "dur")]
    pub canary_interval: Duration,
}
impl Default for DoctorSettings {
    fn default() -> Self {
        DoctorSettings {
            canary_upn: None,
            canary_interval: Duration::from_secs(6 * 3600),
        }
    }
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
    /// A request body not received in full within this time is refused
    /// (408): a caller trickling bytes holds no connection for long.
    #[serde(with = "dur")]
    pub body_read_timeout: Duration,
    /// Bodies larger than 64 KiB read at once, service-wide (each up to
    /// `body_limit_bytes`); more wait for a turn, and the wait counts
    /// against `body_read_timeout`. Bounds the memory a burst of large
    /// bodies can take.
    pub max_large_bodies: usize,
}
impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "0.0.0.0:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            body_limit_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(20),
            poll_after_secs: 5,
            body_read_timeout: Duration::from_secs(10),
            max_large_bodies: 4,
        }
    }
}

/// The store's URL. Its password never prints (`Debug` and `Display` show
/// `***`); `expose` gives the real value to the driver, and serializing it
/// (a child process's configuration) writes the real value.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl From<String> for StoreUrl {
    fn from(s: String) -> StoreUrl {
        StoreUrl(s)
    }
}
impl From<&str> for StoreUrl {
    fn from(s: &str) -> StoreUrl {
        StoreUrl(s.to_string())
    }
}
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}
impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// SQLite's `synchronous`: `full` (a commit survives power loss) or `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://path` (embedded default) or `postgres://...` (several replicas).
    pub url: StoreUrl,
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
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite only: the page cache, in MiB. SQLite's own default (2 MiB)
    /// makes every read of a store with months of history go to the file:
    /// intake, claims and reads were 1.3-1.5 x slower at 300,000 finished
    /// runs, and flat with 32 MiB; 16 MiB is the default since a 5,000-user
    /// storm filled 32 MiB past the 64 MB memory target, and it keeps a
    /// 1,000,000-run store's figures within the same bounds
    /// (docs/performance.md, store-1m). The memory is used only as the store
    /// grows into it.
    pub sqlite_cache_mib: u32,
}
impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: StoreUrl::from("sqlite://wipehook.db"),
            max_connections: 8,
            run_retention: Duration::from_secs(90 * 86400),
            delivery_retention: Duration::from_secs(7 * 86400),
            lease: Duration::from_secs(30),
            sqlite_synchronous: SqliteSynchronous::Full,
            sqlite_cache_mib: 16,
        }
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
    /// Also post each record to the Defender incident through Microsoft
    /// Graph (`SecurityIncident.ReadWrite.All`).
    #[serde(default)]
    pub defender_mirror: bool,
    /// This tenant's canary mailbox (overrides `doctor.canary_upn`).
    #[serde(default)]
    pub canary_upn: Option<String>,
    /// Object ids of the callers (playbook managed identities, approvers)
    /// whose tokens, issued in this tenant, may act on this tenant's
    /// workspaces. With one tenant, `inbound.allowed_callers` may stand in.
    #[serde(default)]
    pub allowed_callers: Vec<String>,
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
    /// Wipe requests per rolling hour for this tenant; beyond it users are
    /// held for approval (reserved atomically: never overshot).
    pub max_wipes_per_hour: usize,
    /// A run with more users than this needs two distinct approvers
    /// (default: `max_targets_per_run` x 5).
    pub two_person_above: Option<usize>,
    pub client_types: Vec<String>,
    #[serde(with = "dur")]
    pub hold_expiry: Duration,
    #[serde(with = "dur")]
    pub verify_deadline: Duration,
    /// First follow-up of a requested wipe; doubles up to 15 minutes.
    #[serde(with = "dur")]
    pub verify_interval: Duration,
    /// Users first seen in the incident's entity list after the trigger
    /// (correlation can merge unrelated alerts into an incident): `hold`
    /// them for approval, or `contain` them like the trigger's.
    pub users_found_later: FoundLater,
    /// How long a run whose incident has no account yet keeps re-reading
    /// its entities (Defender incidents can reach Sentinel automation up to
    /// 10 minutes late).
    #[serde(with = "dur")]
    pub entity_sync_wait: Duration,
    /// Account steps through Microsoft Graph, in this order, for every user
    /// whose devices were decided (empty: none).
    pub account_steps: Vec<AccountStep>,
    /// `wipe_first` (account steps when every active phone acknowledged, or
    /// at `account_steps_after`) or `contain_first` (account steps at once,
    /// then the wipes).
    pub containment_order: ContainmentOrder,
    #[serde(with = "dur")]
    pub account_steps_after: Duration,
    /// A device not synced for this long is stale: its wipe will probably
    /// never land, and it does not hold the account steps back.
    #[serde(with = "dur")]
    pub stale_after: Duration,
    /// A device first synced at or after the incident's first activity minus
    /// this margin is a suspected attacker device (wiped and blocked).
    #[serde(with = "dur")]
    pub attacker_device_margin: Duration,
}

/// What to do with users found after the trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundLater {
    #[default]
    Hold,
    Contain,
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
            two_person_above: None,
            client_types: vec!["EAS".into(), "Outlook".into(), "REST".into()],
            hold_expiry: Duration::from_secs(24 * 3600),
            verify_deadline: Duration::from_secs(24 * 3600),
            verify_interval: Duration::from_secs(60),
            users_found_later: FoundLater::Hold,
            entity_sync_wait: Duration::from_secs(600),
            account_steps: vec![],
            containment_order: ContainmentOrder::WipeFirst,
            account_steps_after: Duration::from_secs(15 * 60),
            stale_after: Duration::from_secs(30 * 86400),
            attacker_device_margin: Duration::from_secs(10 * 60),
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
    pub max_wipes_per_hour: Option<usize>,
    pub two_person_above: Option<usize>,
    pub client_types: Option<Vec<String>>,
    #[serde(default, with = "opt_dur")]
    pub hold_expiry: Option<Duration>,
    #[serde(default, with = "opt_dur")]
    pub verify_deadline: Option<Duration>,
    pub users_found_later: Option<FoundLater>,
    pub account_steps: Option<Vec<AccountStep>>,
    pub containment_order: Option<ContainmentOrder>,
    #[serde(default, with = "opt_dur")]
    pub account_steps_after: Option<Duration>,
    #[serde(default, with = "opt_dur")]
    pub stale_after: Option<Duration>,
    #[serde(default, with = "opt_dur")]
    pub attacker_device_margin: Option<Duration>,
}

impl PolicySettings {
    /// Users above which a run needs two distinct approvers.
    pub fn two_person_threshold(&self) -> usize {
        self.two_person_above
            .unwrap_or(self.max_targets_per_run.saturating_mul(5))
    }

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
        if let Some(v) = o.max_wipes_per_hour {
            p.max_wipes_per_hour = v;
        }
        if o.two_person_above.is_some() {
            p.two_person_above = o.two_person_above;
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
        if let Some(v) = o.users_found_later {
            p.users_found_later = v;
        }
        if let Some(v) = &o.account_steps {
            p.account_steps = v.clone();
        }
        if let Some(v) = o.containment_order {
            p.containment_order = v;
        }
        if let Some(v) = o.account_steps_after {
            p.account_steps_after = v;
        }
        if let Some(v) = o.stale_after {
            p.stale_after = v;
        }
        if let Some(v) = o.attacker_device_margin {
            p.attacker_device_margin = v;
        }
        p
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Exchange-bound tasks (contain, verify, cancel, block) executed at
    /// once by this process.
    pub slots: usize,
    /// ARM- and Graph-bound tasks (records, entity reads, look-ups, account
    /// steps, hold expiry) executed at once, beside `slots`: they never wait
    /// behind tasks queued for Exchange capacity.
    pub arm_graph_slots: usize,
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
            arm_graph_slots: 32,
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
    pub defender_mirror: bool,
    /// The mailbox the doctor and the canary read (`canary_upn`).
    pub canary: Option<Upn>,
    /// Object ids (lower case) that may call for this tenant, with a token
    /// issued in it.
    pub allowed_callers: Vec<String>,
}

/// Validated settings, with what the service needs parsed, once.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub cloud: Cloud,
    /// Each configured tenant with its effective policy.
    pub tenants: Vec<Tenant>,
}

impl Config {
    /// Validate the settings and parse the cloud and the tenants.
    pub fn new(settings: Settings) -> Result<Config, String> {
        let cloud = settings.cloud.resolve()?;
        let tenants = settings.parse_tenants()?;
        reqwest::Url::parse(&settings.server.public_url).map_err(|e| {
            format!(
                "server.public_url '{}' is not a URL: {e}",
                settings.server.public_url
            )
        })?;
        if !settings.store.url.is_sqlite() && !settings.store.url.is_postgres() {
            return Err("store.url must start with sqlite: or postgres://".into());
        }
        let w = &settings.worker;
        if w.slots == 0 || w.arm_graph_slots == 0 || w.exchange_max_concurrency == 0 {
            return Err(
                "worker.slots, worker.arm_graph_slots and worker.exchange_max_concurrency must be at least 1".into(),
            );
        }
        if !(2..=100).contains(&settings.record.max_comments_per_run) {
            return Err("record.max_comments_per_run must be between 2 and 100".into());
        }
        if !w.backoff_scale.is_finite() || w.backoff_scale < 0.0 {
            return Err("worker.backoff_scale must be a number >= 0".into());
        }
        for p in std::iter::once(&settings.policy).chain(tenants.iter().map(|t| &t.policy)) {
            let mut seen = vec![];
            for s in &p.account_steps {
                if seen.contains(s) {
                    return Err(format!("policy.account_steps: '{s}' is listed twice"));
                }
                seen.push(*s);
            }
            for c in &p.client_types {
                if !["eas", "outlook", "rest"].contains(&c.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "policy.client_types: '{c}' is not one of EAS, Outlook, REST"
                    ));
                }
            }
        }
        Ok(Config {
            settings,
            cloud,
            tenants,
        })
    }
}

impl Settings {
    fn parse_tenants(&self) -> Result<Vec<Tenant>, String> {
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
            let canary = t
                .canary_upn
                .as_ref()
                .or(self.doctor.canary_upn.as_ref())
                .map(|u| Upn::parse(u).map_err(|e| format!("canary_upn: {e}")))
                .transpose()?;
            // A caller belongs to one tenant: the global list only binds when
            // there is exactly one.
            if !self.inbound.allowed_callers.is_empty() && self.tenants.len() > 1 {
                return Err(
                    "inbound.allowed_callers names callers without their tenant: with several tenants, \
                     list each tenant's callers in its [[tenants]] block as allowed_callers"
                        .into(),
                );
            }
            let callers = if t.allowed_callers.is_empty() {
                &self.inbound.allowed_callers
            } else {
                &t.allowed_callers
            };
            let allowed_callers = callers
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            for w in &workspaces {
                if out.iter().any(|o: &Tenant| o.workspaces.contains(w)) {
                    return Err(format!(
                        "workspace {} is listed under two tenants: a workspace belongs to one tenant",
                        w.arm_id()
                    ));
                }
            }
            out.push(Tenant {
                id,
                workspaces,
                credential: t.credential.clone(),
                policy,
                defender_mirror: t.defender_mirror,
                canary,
                allowed_callers,
            });
        }
        Ok(out)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut s = self.clone();
        s.store.url = StoreUrl(s.store.url.redacted());
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
