//! The only module that knows Exchange Online's admin REST endpoint
//! (`POST {exchange_url}/adminapi/beta/{tenant}/InvokeCommand`). Its surface
//! makes the two dangerous mistakes unrepresentable: `Get-MobileDevice` is
//! only ever sent with `Mailbox` (a `Upn`, never empty), and a wipe is only
//! ever sent with `AccountOnly: true` and `Confirm: false`.
//!
//! For `wipehook doctor` and the canary it also reads, never writes: the
//! canary mailbox's devices and statistics with the names of the fields
//! wipehook reads (`DEVICE_FIELDS`, `STATISTICS_FIELDS`: the one place that
//! lists them), and wipehook's own Exchange RBAC (`Get-ManagementRoleAssignment
//! -RoleAssignee`, `Get-ManagementRoleEntry -Identity role\cmdlet`).

pub mod limiter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::domain::{ClientType, DeviceGuid, EasVersion, MobileDevice, TenantId, Upn};
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::upstream::{Brake, CallError, Lookup, backoff, retry_after};
use limiter::Limiter;

/// The cmdlets wipehook sends. Private fields: built only by the methods of
/// `ExchangeClient`, which fix the safety-relevant parameters.
#[derive(Clone, Debug)]
enum Command {
    GetMobileDevice {
        mailbox: Upn,
    },
    ClearAccountOnly {
        identity: DeviceGuid,
        notify: Vec<String>,
    },
    CancelWipe {
        identity: DeviceGuid,
    },
    GetStatistics {
        mailbox: Upn,
    },
    /// `Get-ManagementRoleAssignment -RoleAssignee <object id>`: one
    /// principal's role assignments, never every assignment.
    GetRoleAssignments {
        assignee: uuid::Uuid,
    },
    /// `Set-CASMailbox -Identity <mailbox> -ActiveSyncBlockedDeviceIDs
    /// @{Add=<id>}` (or `@{Remove=<id>}`): adds to (removes from) the list,
    /// never replaces it.
    BlockDevice {
        mailbox: Upn,
        device_id: DeviceId,
        remove: bool,
    },
    /// `Get-ManagementRoleEntry -Identity "<role>\<cmdlet>"`: one entry.
    GetRoleEntry {
        role: RoleName,
        cmdlet: &'static str,
    },
}

/// An EAS `DeviceId` to block: letters and digits only (never empty, no
/// wildcard), so the block names exactly one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(raw: &str) -> Result<DeviceId, String> {
        let r = raw.trim();
        if r.is_empty() || r.len() > 128 || !r.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("'{raw}' is not an ActiveSync device id"));
        }
        Ok(DeviceId(r.to_string()))
    }
}

/// An Exchange management role's name as Exchange reported it: never
/// empty, no wildcard, no backslash (so `role\cmdlet` names one entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str) -> Result<RoleName, String> {
        let r = raw.trim();
        if r.is_empty() || r.contains(['*', '\\', '?']) {
            return Err(format!("'{raw}' is not a management role name"));
        }
        Ok(RoleName(r.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Command {
    fn cmdlet(&self) -> &'static str {
        match self {
            Command::GetMobileDevice { .. } => "Get-MobileDevice",
            Command::ClearAccountOnly { .. } | Command::CancelWipe { .. } => "Clear-MobileDevice",
            Command::GetStatistics { .. } => "Get-MobileDeviceStatistics",
            Command::GetRoleAssignments { .. } => "Get-ManagementRoleAssignment",
            Command::GetRoleEntry { .. } => "Get-ManagementRoleEntry",
            Command::BlockDevice { .. } => "Set-CASMailbox",
        }
    }
    fn parameters(&self) -> Value {
        match self {
            Command::GetMobileDevice { mailbox } => {
                json!({"Mailbox": mailbox.as_str(), "ResultSize": "Unlimited"})
            }
            Command::ClearAccountOnly { identity, notify } => {
                let mut p =
                    json!({"Identity": identity.as_str(), "AccountOnly": true, "Confirm": false});
                if !notify.is_empty() {
                    p["NotificationEmailAddresses"] = json!(notify);
                }
                p
            }
            Command::CancelWipe { identity } => {
                // AccountOnly here too: if Exchange ever ignored Cancel, the
                // worst outcome is an account-only wipe, never a full one.
                json!({"Identity": identity.as_str(), "Cancel": true, "AccountOnly": true, "Confirm": false})
            }
            Command::GetStatistics { mailbox } => json!({"Mailbox": mailbox.as_str()}),
            Command::GetRoleAssignments { assignee } => {
                json!({"RoleAssignee": assignee.hyphenated().to_string()})
            }
            Command::BlockDevice {
                mailbox,
                device_id,
                remove,
            } => {
                let op = if *remove { "remove" } else { "add" };
                json!({
                    "Identity": mailbox.as_str(),
                    "ActiveSyncBlockedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable", op: device_id.0},
                })
            }
            Command::GetRoleEntry { role, cmdlet } => {
                json!({"Identity": format!("{}\\{cmdlet}", role.as_str())})
            }
        }
    }
    fn reads(&self) -> bool {
        matches!(
            self,
            Command::GetMobileDevice { .. }
                | Command::GetStatistics { .. }
                | Command::GetRoleAssignments { .. }
                | Command::GetRoleEntry { .. }
        )
    }
    /// How long one request of this kind may take before its answer is
    /// taken as lost: every command names one mailbox or device, so a reply
    /// slower than this is a hung call, and its slot goes back to the tenant.
    /// A wipe whose answer was lost is sent again (safe: see ARCHITECTURE.md).
    fn timeout(&self) -> Duration {
        match self {
            Command::GetMobileDevice { .. } | Command::GetStatistics { .. } => READ_TIMEOUT,
            Command::ClearAccountOnly { .. }
            | Command::CancelWipe { .. }
            | Command::BlockDevice { .. } => WRITE_TIMEOUT,
            // The doctor's RBAC reads list a role's entries: allowed longer.
            Command::GetRoleAssignments { .. } | Command::GetRoleEntry { .. } => {
                Duration::from_secs(60)
            }
        }
    }
    fn anchor(&self, tenant: &TenantId) -> String {
        match self {
            Command::GetMobileDevice { mailbox }
            | Command::GetStatistics { mailbox }
            | Command::BlockDevice { mailbox, .. } => format!("UPN:{}", mailbox.as_str()),
            _ => format!("APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"),
        }
    }
    fn body(&self) -> Value {
        json!({"CmdletInput": {"CmdletName": self.cmdlet(), "Parameters": self.parameters()}})
    }
}

/// The names of the fields wipehook reads from Exchange's rows. Parsers and
/// the canary's field check use these constants, so the two cannot drift.
mod field {
    pub const GUID: &str = "Guid";
    pub const IDENTITY: &str = "Identity";
    pub const DEVICE_ID: &str = "DeviceId";
    pub const DEVICE_TYPE: &str = "DeviceType";
    pub const MODEL: &str = "DeviceModel";
    pub const OS: &str = "DeviceOS";
    pub const USER_AGENT: &str = "DeviceUserAgent";
    pub const CLIENT_TYPE: &str = "ClientType";
    pub const EAS_VERSION: &str = "DeviceActiveSyncVersion";
    pub const CLIENT_VERSION: &str = "ClientVersion";
    /// Get-MobileDeviceStatistics spells the device id `DeviceID`.
    pub const STATS_DEVICE_ID: &str = "DeviceID";
    pub const STATUS: &str = "Status";
    pub const ACK_ACCOUNT_ONLY: &str = "AccountOnlyDeviceWipeAckTime";
    pub const ACK_FULL: &str = "DeviceWipeAckTime";
    pub const FIRST_SYNC: &str = "FirstSyncTime";
    /// Statistics only; not in `STATISTICS_FIELDS`: a device that never
    /// synced has none, and whether Exchange keeps the empty key is unverified.
    pub const LAST_SUCCESS_SYNC: &str = "LastSuccessSync";
}

/// A value wipehook reads from a row: the names Exchange may give it (any
/// one present will do), and whether its absence is a failure. A field that
/// is not `required` only warns: whether Exchange's JSON answer keeps a key
/// whose value is empty (a device never wiped has no acknowledgement time)
/// is unverified, so its absence alone does not prove a rename.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub names: &'static [&'static str],
    pub required: bool,
}

/// What `mobile_devices` reads from each `Get-MobileDevice` row.
pub const DEVICE_FIELDS: &[Field] = &[
    Field {
        names: &[field::GUID],
        required: true,
    },
    Field {
        names: &[field::FIRST_SYNC],
        required: false,
    },
    Field {
        names: &[field::IDENTITY],
        required: true,
    },
    Field {
        names: &[field::DEVICE_ID],
        required: true,
    },
    Field {
        names: &[field::DEVICE_TYPE],
        required: true,
    },
    Field {
        names: &[field::MODEL],
        required: true,
    },
    Field {
        names: &[field::OS],
        required: true,
    },
    Field {
        names: &[field::USER_AGENT],
        required: true,
    },
    Field {
        names: &[field::CLIENT_TYPE],
        required: true,
    },
    Field {
        names: &[field::EAS_VERSION, field::CLIENT_VERSION],
        required: true,
    },
];

/// What `statistics` reads from each `Get-MobileDeviceStatistics` row.
pub const STATISTICS_FIELDS: &[Field] = &[
    Field {
        names: &[field::GUID],
        required: true,
    },
    Field {
        names: &[field::STATS_DEVICE_ID, field::DEVICE_ID],
        required: true,
    },
    Field {
        names: &[field::STATUS],
        required: true,
    },
    Field {
        names: &[field::ACK_ACCOUNT_ONLY, field::ACK_FULL],
        required: false,
    },
];

/// What a read-only probe of a cmdlet saw: how many rows, which fields
/// wipehook reads were absent from some row, and whether wipehook's own
/// parser accepted the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldProbe {
    pub rows: usize,
    /// Required fields absent from at least one row (by their first name).
    pub missing: Vec<String>,
    /// Fields that are not required, absent from every row.
    pub absent_optional: Vec<String>,
    /// The parser's refusal, when it refused.
    pub parse_error: Option<String>,
}

impl FieldProbe {
    fn of(rows: &[Value], fields: &[Field]) -> FieldProbe {
        let has = |r: &Value, f: &Field| {
            r.as_object()
                .is_some_and(|o| f.names.iter().any(|n| o.contains_key(*n)))
        };
        let mut p = FieldProbe {
            rows: rows.len(),
            ..Default::default()
        };
        for f in fields {
            let name = f.names.join(" or ");
            if f.required && rows.iter().any(|r| !has(r, f)) {
                p.missing.push(name);
            } else if !f.required && !rows.is_empty() && rows.iter().all(|r| !has(r, f)) {
                p.absent_optional.push(name);
            }
        }
        p
    }
}

/// One management role assignment of wipehook's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentView {
    pub role: String,
    pub enabled: bool,
    /// `RecipientWriteScope` (e.g. "Organization", "CustomRecipientScope").
    pub write_scope: String,
    pub custom_write_scope: Option<String>,
}

/// One role entry: a cmdlet a role holds, with the parameters it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleEntryView {
    pub role: String,
    pub cmdlet: String,
    pub parameters: Vec<String>,
}

/// wipehook's Exchange RBAC as Exchange reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RbacView {
    pub assignments: Vec<RoleAssignmentView>,
    /// The entries of the cmdlets wipehook runs, in the roles assigned.
    pub entries: Vec<RoleEntryView>,
}

/// The cmdlets wipehook runs, with the parameters it sends to each.
pub const CMDLETS_USED: [(&str, &[&str]); 3] = [
    ("Get-MobileDevice", &["Mailbox", "ResultSize"]),
    ("Get-MobileDeviceStatistics", &["Mailbox"]),
    (
        "Clear-MobileDevice",
        &[
            "Identity",
            "AccountOnly",
            "Cancel",
            "Confirm",
            "NotificationEmailAddresses",
        ],
    ),
];

/// What a cancel came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The pending wipe was cancelled (with any other warnings).
    Cancelled { warnings: Vec<String> },
    /// Nothing was pending (already acknowledged, or never requested):
    /// Exchange's warning.
    NothingPending(String),
}

/// One device's wipe state from Get-MobileDeviceStatistics.
#[derive(Clone, Debug)]
pub struct DeviceStatistics {
    pub guid: Option<DeviceGuid>,
    pub device_id: String,
    pub status: String,
    /// When the device acknowledged an (account-only) wipe.
    pub wipe_acked_at: Option<i64>,
    /// Its last successful sync (Unix ms), when Exchange gave one.
    pub last_sync_ms: Option<i64>,
}

impl DeviceStatistics {
    /// Acknowledged after `requested_at` (ms): an acknowledgement of an
    /// earlier wipe of the same device does not count. One minute of clock
    /// skew between Exchange and wipehook is tolerated.
    pub fn acknowledged_since(&self, requested_at: i64) -> bool {
        match self.wipe_acked_at {
            Some(at) => at >= requested_at - 60_000,
            None => false,
        }
    }
}

/// The mailbox part of a device `Identity` (`<mailbox>\ExchangeActiveSyncDevices\<device>`).
pub fn identity_mailbox(identity: &str) -> Option<&str> {
    let lower = identity.to_ascii_lowercase();
    let pos = lower.find("\\exchangeactivesyncdevices\\")?;
    Some(&identity[..pos])
}

/// The limiters' current limits, readable without the client.
#[derive(Clone)]
pub struct LimitsView {
    limiters: Arc<Mutex<HashMap<String, Limiter>>>,
    initial: usize,
}

impl LimitsView {
    /// A tenant's current limit (the initial one before its first call).
    pub fn current(&self, tenant: &TenantId) -> usize {
        let m = self.limiters.lock().expect("limiters lock");
        m.get(tenant.as_str())
            .map(Limiter::current_limit)
            .unwrap_or(self.initial.max(1))
    }

    /// A tenant's calls holding a place of its limit now.
    pub fn in_flight(&self, tenant: &TenantId) -> usize {
        let m = self.limiters.lock().expect("limiters lock");
        m.get(tenant.as_str()).map(Limiter::inflight).unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct ExchangeClient {
    http: reqwest::Client,
    base: String,
    limiters: Arc<Mutex<HashMap<String, Limiter>>>,
    initial: usize,
    max: usize,
    backoff_scale: f64,
    metrics: Metrics,
    brake: Brake,
}

/// The refusal of a wipe the kill switch stopped before it left.
pub const BRAKE_REFUSAL: &str = "kill switch engaged: the wipe was not sent";

const CONCURRENCY_MESSAGE: &str = "maximum number of concurrent requests per tenant";
/// The warning `Clear-MobileDevice -Cancel` gives when no wipe is pending.
const CANNOT_CANCEL_WIPE: &str = "CannotCancelWipe";
/// Exception names the EXO module treats as transient (exchange-online.md §1.9).
const TRANSIENT_EXCEPTIONS: [&str; 5] = [
    "DCOverloadedException",
    "SuitabilityDirectoryException",
    "ServerInMMException",
    "ADServerSettingsChangedException",
    "StorageTransientException",
];
const MAX_THROTTLE_RETRIES: u32 = 30;
const MAX_OTHER_RETRIES: u32 = 5;
/// Inside one call, our own backoff (no `Retry-After`) starts here and
/// doubles up to `IN_CALL_BACKOFF_CAP`: a flaky Exchange is retried within
/// seconds, and the queue's backoff takes over after `CALL_DEADLINE`.
const IN_CALL_BACKOFF_BASE: Duration = Duration::from_millis(250);
const IN_CALL_BACKOFF_CAP: Duration = Duration::from_secs(4);
/// One call (a page, with its in-call retries) gives up retrying when the
/// next wait would take it past this; the task is then retried by the queue.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// Per request: `Get-MobileDevice`, `Get-MobileDeviceStatistics`.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Per request: `Clear-MobileDevice` (wipe, cancel).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

impl ExchangeClient {
    pub fn new(
        http: reqwest::Client,
        exchange_url: &str,
        initial: usize,
        max: usize,
        backoff_scale: f64,
        metrics: Metrics,
    ) -> ExchangeClient {
        ExchangeClient {
            http,
            base: exchange_url.trim_end_matches('/').to_string(),
            limiters: Arc::default(),
            initial,
            max,
            backoff_scale,
            metrics,
            brake: Brake::default(),
        }
    }

    /// Stop every wipe while `brake` is engaged (the kill switch): checked
    /// after the call's limiter slot is granted, before each attempt.
    pub fn with_brake(mut self, brake: Brake) -> ExchangeClient {
        self.brake = brake;
        self
    }

    /// A read-only view of every tenant's current concurrency limit (for
    /// `/metrics`, which must not hold the client).
    pub fn limits(&self) -> LimitsView {
        LimitsView {
            limiters: self.limiters.clone(),
            initial: self.initial,
        }
    }

    pub fn limiter(&self, tenant: &TenantId) -> Limiter {
        let mut m = self.limiters.lock().expect("limiters lock");
        m.entry(tenant.to_string())
            .or_insert_with(|| Limiter::new(self.initial, self.max))
            .clone()
    }

    /// `Get-MobileDevice -Mailbox <upn>`, every page. Refuses a result that
    /// mixes several mailboxes (the symptom of a filter Exchange ignored).
    pub async fn mobile_devices(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        upn: &Upn,
    ) -> Result<Vec<MobileDevice>, CallError> {
        let rows = self
            .invoke(
                tokens,
                tenant,
                &Command::GetMobileDevice {
                    mailbox: upn.clone(),
                },
            )
            .await?
            .rows;
        parse_devices(&rows, upn)
    }

    /// `Get-MobileDevice -Mailbox <upn>` for the canary: the rows' fields
    /// against `DEVICE_FIELDS`, and wipehook's parser on them. Read-only.
    pub async fn probe_mobile_devices(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        upn: &Upn,
    ) -> Result<FieldProbe, CallError> {
        let rows = self
            .invoke(
                tokens,
                tenant,
                &Command::GetMobileDevice {
                    mailbox: upn.clone(),
                },
            )
            .await?
            .rows;
        let mut p = FieldProbe::of(&rows, DEVICE_FIELDS);
        p.parse_error = parse_devices(&rows, upn)
            .err()
            .map(|e| e.reason().to_string());
        Ok(p)
    }

    /// `Get-MobileDeviceStatistics -Mailbox <upn>` for the canary: the rows'
    /// fields against `STATISTICS_FIELDS`. Read-only.
    pub async fn probe_statistics(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        upn: &Upn,
    ) -> Result<FieldProbe, CallError> {
        let rows = self
            .invoke(
                tokens,
                tenant,
                &Command::GetStatistics {
                    mailbox: upn.clone(),
                },
            )
            .await?
            .rows;
        Ok(FieldProbe::of(&rows, STATISTICS_FIELDS))
    }

    /// wipehook's Exchange RBAC, read with its own identity: its role
    /// assignments (`Get-ManagementRoleAssignment -RoleAssignee <its object
    /// id>`), then in each role assigned the entry of each cmdlet wipehook
    /// runs (`Get-ManagementRoleEntry -Identity "<role>\<cmdlet>"`).
    /// `Denied`: the identity may not run these cmdlets (the least-privilege
    /// role of docs/setup.md step 4 holds only the three mobile cmdlets);
    /// `Missing`: Exchange knows no such role assignee. Both are reads of
    /// configuration only; neither needs nor touches a mailbox.
    pub async fn rbac_of(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        principal: &uuid::Uuid,
    ) -> Result<Lookup<RbacView>, CallError> {
        let cmd = Command::GetRoleAssignments {
            assignee: *principal,
        };
        let rows = match self.invoke(tokens, tenant, &cmd).await {
            Ok(a) => a.rows,
            Err(e) if names_exception(&e, "CommandNotFoundException") => {
                return Ok(Lookup::Denied(e.reason().to_string()));
            }
            Err(e) if names_exception(&e, "ManagementObjectNotFoundException") => {
                return Ok(Lookup::Missing(e.reason().to_string()));
            }
            Err(e) => return Err(e),
        };
        let mut view = RbacView::default();
        for r in rows.iter().filter_map(Value::as_object) {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            view.assignments.push(RoleAssignmentView {
                role: s("Role"),
                enabled: r.get("Enabled").and_then(Value::as_bool).unwrap_or(true),
                write_scope: s("RecipientWriteScope"),
                custom_write_scope: Some(s("CustomRecipientWriteScope")).filter(|c| !c.is_empty()),
            });
        }
        let mut roles: Vec<RoleName> = view
            .assignments
            .iter()
            .filter(|a| a.enabled)
            .filter_map(|a| RoleName::parse(&a.role).ok())
            .collect();
        roles.dedup();
        for role in roles {
            for (cmdlet, _) in CMDLETS_USED {
                let cmd = Command::GetRoleEntry {
                    role: role.clone(),
                    cmdlet,
                };
                let rows = match self.invoke(tokens, tenant, &cmd).await {
                    Ok(a) => a.rows,
                    Err(e) if names_exception(&e, "ManagementObjectNotFoundException") => {
                        continue;
                    }
                    Err(e) if names_exception(&e, "CommandNotFoundException") => {
                        return Ok(Lookup::Denied(e.reason().to_string()));
                    }
                    Err(e) => return Err(e),
                };
                for r in rows.iter().filter_map(Value::as_object) {
                    view.entries.push(RoleEntryView {
                        role: role.as_str().to_string(),
                        cmdlet: r
                            .get("Name")
                            .and_then(Value::as_str)
                            .unwrap_or(cmdlet)
                            .to_string(),
                        parameters: r
                            .get("Parameters")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(Lookup::Found(view))
    }

    /// `Clear-MobileDevice -Identity <guid> -AccountOnly -Confirm:$false`.
    /// `Ok`: Exchange accepted the request, with its warnings (recorded).
    pub async fn clear_account_only(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        guid: &DeviceGuid,
        notify: &[String],
    ) -> Result<Vec<String>, CallError> {
        self.invoke(
            tokens,
            tenant,
            &Command::ClearAccountOnly {
                identity: guid.clone(),
                notify: notify.to_vec(),
            },
        )
        .await
        .map(|a| a.warnings)
    }

    /// `Clear-MobileDevice -Identity <guid> -Cancel -Confirm:$false`.
    pub async fn cancel_wipe(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        guid: &DeviceGuid,
    ) -> Result<CancelOutcome, CallError> {
        let answer = self
            .invoke(
                tokens,
                tenant,
                &Command::CancelWipe {
                    identity: guid.clone(),
                },
            )
            .await?;
        // With nothing pending, Exchange warns (CannotCancelWipe) instead of failing.
        Ok(
            match answer
                .warnings
                .iter()
                .find(|w| w.contains(CANNOT_CANCEL_WIPE))
            {
                Some(w) => CancelOutcome::NothingPending(w.clone()),
                None => CancelOutcome::Cancelled {
                    warnings: answer.warnings,
                },
            },
        )
    }

    /// Block (or unblock) one ActiveSync device id for one mailbox
    /// (`Set-CASMailbox ... -ActiveSyncBlockedDeviceIDs @{Add|Remove=...}`).
    pub async fn block_device(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        mailbox: &Upn,
        device_id: &DeviceId,
        remove: bool,
    ) -> Result<Vec<String>, CallError> {
        self.invoke(
            tokens,
            tenant,
            &Command::BlockDevice {
                mailbox: mailbox.clone(),
                device_id: device_id.clone(),
                remove,
            },
        )
        .await
        .map(|a| a.warnings)
    }

    /// `Get-MobileDeviceStatistics -Mailbox <upn>`.
    pub async fn statistics(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        upn: &Upn,
    ) -> Result<Vec<DeviceStatistics>, CallError> {
        let rows = self
            .invoke(
                tokens,
                tenant,
                &Command::GetStatistics {
                    mailbox: upn.clone(),
                },
            )
            .await?
            .rows;
        Ok(rows
            .iter()
            .filter_map(Value::as_object)
            .map(parse_statistics)
            .collect())
    }

    /// Send a command, following `@odata.nextLink`, retrying throttling and
    /// transient failures. Returns the `value` rows and the warnings of every page.
    async fn invoke(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        cmd: &Command,
    ) -> Result<Answer, CallError> {
        let mut url = format!("{}/adminapi/beta/{}/InvokeCommand", self.base, tenant);
        let body = cmd.body();
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut answer = Answer::default();
        let mut pages = 0;
        loop {
            let page = self
                .page(tokens, tenant, cmd, &url, &body, &request_id)
                .await?;
            answer.rows.extend(
                page.get("value")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            answer.warnings.extend(warnings(&page));
            let next = page
                .get("@odata.nextLink")
                .or_else(|| page.get("odata.nextLink"))
                .and_then(Value::as_str);
            match next {
                // Only reads page; a write is never re-posted to a link.
                Some(n) if pages < 1000 && cmd.reads() => {
                    // Only follow links to the same Exchange origin.
                    if !same_origin(n, &self.base) {
                        return Err(CallError::permanent(format!(
                            "Exchange returned a nextLink outside {}: refusing to follow",
                            self.base
                        )));
                    }
                    url = n.to_string();
                    pages += 1;
                }
                _ => break,
            }
        }
        for w in &answer.warnings {
            tracing::info!(cmdlet = cmd.cmdlet(), warning = %w, "Exchange warning");
        }
        Ok(answer)
    }

    async fn page(
        &self,
        tokens: &TokenProvider,
        tenant: &TenantId,
        cmd: &Command,
        url: &str,
        body: &Value,
        request_id: &str,
    ) -> Result<Map<String, Value>, CallError> {
        let limiter = self.limiter(tenant);
        let cmdlet = cmd.cmdlet();
        let (mut throttles, mut others, mut unauthorized) = (0u32, 0u32, 0u32);
        let began = Instant::now();
        // The wait before the next try, unless it would pass the deadline.
        let within = |wait: Duration| began.elapsed() + wait <= CALL_DEADLINE;
        loop {
            let mut permit = Some(limiter.acquire().await);
            if matches!(cmd, Command::ClearAccountOnly { .. }) && self.brake.engaged() {
                drop(permit);
                // Transient: the task runs again, and its guard then holds
                // the user (nothing reserved, nothing sent).
                return Err(CallError::transient(BRAKE_REFUSAL));
            }
            let token = tokens.token(Resource::Exchange).await?;
            let started = Instant::now();
            let request = || {
                self.http
                    .post(url)
                    .bearer_auth(&token)
                    .header("Accept", "application/json")
                    .header("X-ResponseFormat", "json")
                    .header("X-CmdletName", cmdlet)
                    .header("X-ClientApplication", "wipehook")
                    .header("X-AnchorMailbox", cmd.anchor(tenant))
                    .header("Prefer", "odata.maxpagesize=1000")
                    .header("client-request-id", request_id)
                    .timeout(cmd.timeout())
                    .json(body)
                    .send()
            };
            let send = request();
            tokio::pin!(send);
            // A call far slower than this tenant's usual is hung: it gives its
            // slot back and keeps waiting for its answer (up to its timeout),
            // so one hung call does not hold up the tenant's other calls. A
            // read is also sent again, within the limit, and the first answer
            // wins (reads repeat harmlessly; a wipe is never hedged).
            let mut hedged = false;
            let sent = tokio::select! {
                r = &mut send => r,
                _ = tokio::time::sleep(limiter.slow_after()) => {
                    if let Some(p) = permit.take() {
                        p.detach();
                    }
                    self.metrics.retry("exchange", "slow_call");
                    if cmd.reads() {
                        let hedge = async {
                            let p = limiter.acquire().await;
                            (p, request().await)
                        };
                        tokio::select! {
                            r = &mut send => r,
                            (p, r) = hedge => {
                                permit = Some(p);
                                hedged = true;
                                r
                            }
                        }
                    } else {
                        send.await
                    }
                }
            };
            let outcome = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ra = retry_after(resp.headers());
                    match resp.text().await {
                        Ok(text) => {
                            self.metrics.upstream_latency(
                                "exchange",
                                cmdlet,
                                status,
                                started.elapsed(),
                            );
                            classify(status, ra, &text, cmd.reads())
                        }
                        // The connection broke inside the answer: it is lost
                        // (a write is then re-sent, as for a timeout), never
                        // taken as an empty success.
                        Err(e) => {
                            self.metrics
                                .upstream_latency("exchange", cmdlet, 0, started.elapsed());
                            Reply::Retry(
                                CallError::from_reqwest(
                                    &format!("{cmdlet}: HTTP {status}, answer lost"),
                                    e,
                                )
                                .reason()
                                .to_string(),
                                None,
                            )
                        }
                    }
                }
                Err(e) => {
                    self.metrics
                        .upstream_latency("exchange", cmdlet, 0, started.elapsed());
                    Reply::Retry(
                        CallError::from_reqwest(&format!("{cmdlet}"), e)
                            .reason()
                            .to_string(),
                        None,
                    )
                }
            };
            match outcome {
                Reply::Ok(map) => {
                    match permit {
                        Some(p) if !hedged => p.success_after(started.elapsed()),
                        Some(p) => p.success(),
                        None => {}
                    }
                    return Ok(map);
                }
                Reply::Throttled { reason, ra, capped } => {
                    self.metrics.retry("exchange", "throttled");
                    // Exchange's Retry-After is honoured as given; only our
                    // own backoff (no Retry-After) is scaled in tests.
                    let wait = ra.unwrap_or_else(|| {
                        backoff(throttles, IN_CALL_BACKOFF_BASE, IN_CALL_BACKOFF_CAP)
                            .mul_f64(self.backoff_scale)
                    });
                    let wait = wait.max(Duration::from_millis(10));
                    let delay = match permit {
                        Some(p) if capped => p.concurrency_capped(wait),
                        Some(p) => p.throttled(wait),
                        // Refused after it was detached as slow: it waits, the
                        // limiter learns nothing from it.
                        None => wait,
                    };
                    throttles += 1;
                    if throttles > MAX_THROTTLE_RETRIES || !within(wait) {
                        return Err(CallError::Transient {
                            reason: format!(
                                "{cmdlet}: still throttled after {throttles} tries: {reason}"
                            ),
                            retry_after: Some(wait),
                        });
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Reply::Unauthorized(reason) => {
                    drop(permit);
                    self.metrics.retry("exchange", "unauthorized");
                    tokens.invalidate();
                    unauthorized += 1;
                    if unauthorized > 2 {
                        return Err(CallError::transient(format!("{cmdlet}: {reason}")));
                    }
                }
                Reply::Retry(reason, ra) => {
                    drop(permit);
                    self.metrics.retry("exchange", "transient");
                    others += 1;
                    if others > MAX_OTHER_RETRIES {
                        return Err(CallError::Transient {
                            reason: format!("{cmdlet}: {reason}"),
                            retry_after: ra,
                        });
                    }
                    let wait = ra.unwrap_or_else(|| {
                        backoff(others - 1, IN_CALL_BACKOFF_BASE, IN_CALL_BACKOFF_CAP)
                            .mul_f64(self.backoff_scale)
                    });
                    if !within(wait) {
                        return Err(CallError::Transient {
                            reason: format!("{cmdlet}: {reason}"),
                            retry_after: ra,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
                Reply::Fail(reason) => {
                    drop(permit);
                    return Err(CallError::permanent(format!("{cmdlet}: {reason}")));
                }
            }
        }
    }
}

enum Reply {
    Ok(Map<String, Value>),
    /// A 429, or (`capped`) Exchange's concurrency message: its tenant cap
    /// was reached.
    Throttled {
        reason: String,
        ra: Option<Duration>,
        capped: bool,
    },
    Unauthorized(String),
    Retry(String, Option<Duration>),
    Fail(String),
}

/// `reads`: the command returns rows (a Get- cmdlet). A 2xx without a JSON
/// body is then retried; for a write (Clear-MobileDevice) it is success,
/// since re-sending a wipe because its answer was empty helps nobody.
fn classify(status: u16, ra: Option<Duration>, text: &str, reads: bool) -> Reply {
    let json: Option<Value> = serde_json::from_str(text).ok();
    let message = json.as_ref().map(error_message).unwrap_or_default();
    let readable = if message.is_empty() {
        without_markup(text.trim_matches(char::from(0)))
            .chars()
            .take(300)
            .collect::<String>()
    } else {
        message.clone()
    };
    // Only an error answer can be the throttle message: a 2xx body carries
    // device fields a user controls (model, friendly name).
    if !(200..=299).contains(&status) && text.to_ascii_lowercase().contains(CONCURRENCY_MESSAGE) {
        return Reply::Throttled {
            reason: format!("tenant concurrency limit: {readable}"),
            ra,
            capped: true,
        };
    }
    match status {
        200..=299 => match json {
            Some(Value::Object(map)) => {
                if let Some(errs) = map
                    .get("@adminapi.errors")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                {
                    return Reply::Fail(format!(
                        "Exchange reported errors: {}",
                        errs.iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                if map.contains_key("@adminapi.confirmationmessage") {
                    return Reply::Fail(
                        "Exchange asked for confirmation instead of executing".into(),
                    );
                }
                Reply::Ok(map)
            }
            _ if reads => Reply::Retry(format!("HTTP {status} with a body that is not JSON"), None),
            _ => Reply::Ok(Map::new()),
        },
        429 => Reply::Throttled {
            reason: format!("HTTP 429 {readable}"),
            ra,
            capped: false,
        },
        401 => Reply::Unauthorized(format!("HTTP 401 {readable}")),
        408 | 503 | 504 => Reply::Retry(format!("HTTP {status} {readable}"), ra),
        _ if TRANSIENT_EXCEPTIONS.iter().any(|e| text.contains(e)) => {
            Reply::Retry(format!("HTTP {status} {readable}"), ra)
        }
        // Exchange answers 500 both for its own transient faults and for a
        // cmdlet's error: an envelope that names the cmdlet's exception is
        // final; a 500 without one is retried (a bounded number of times).
        500 => match cmdlet_exception(json.as_ref()) {
            Some(ex) => Reply::Fail(format!("HTTP 500: the cmdlet failed ({ex}): {readable}")),
            None => Reply::Retry(
                format!("HTTP 500 without a cmdlet error (an Exchange server fault): {readable}"),
                ra,
            ),
        },
        403 => Reply::Fail(format!(
            "HTTP 403: access denied; check Exchange.ManageAsApp and the Exchange RBAC role group ({readable})"
        )),
        _ => Reply::Fail(format!("HTTP {status}: {readable}")),
    }
}

/// A front end's HTML error page as its words (`500 Internal Server Error`),
/// for the record; other text as it is.
fn without_markup(text: &str) -> String {
    if !text.trim_start().starts_with('<') {
        return text.to_string();
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rows and warnings of a command's answer.
#[derive(Debug, Default)]
struct Answer {
    rows: Vec<Value>,
    /// `@adminapi.warnings`: cmdlet messages that did not fail the command.
    warnings: Vec<String>,
}

fn warnings(page: &Map<String, Value>) -> Vec<String> {
    page.get("@adminapi.warnings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|w| match w {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .filter(|w| !w.trim().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The exception an error envelope names for the cmdlet (`details[0].message`
/// is `ErrorId|Exception|text`), when it names one.
fn cmdlet_exception(v: Option<&Value>) -> Option<String> {
    let d = v?["error"]["details"][0]["message"].as_str()?;
    let parts: Vec<&str> = d.splitn(3, '|').collect();
    match parts.as_slice() {
        [_, ex, _] if ex.contains("Exception") => {
            Some(ex.rsplit('.').next().unwrap_or(ex).to_string())
        }
        _ => None,
    }
}

/// The readable reason of an Exchange error envelope: `details[0].message`
/// (`ErrorId|Exception|text` keeps only the text), then the inner exception.
fn error_message(v: &Value) -> String {
    let e = &v["error"];
    let detail = e["details"][0]["message"]
        .as_str()
        .or_else(|| e["innererror"]["internalexception"]["message"].as_str())
        .or_else(|| e["message"].as_str());
    match detail {
        Some(d) => {
            let parts: Vec<&str> = d.splitn(3, '|').collect();
            if parts.len() == 3 {
                format!(
                    "{} ({})",
                    parts[2].trim(),
                    parts[1].rsplit('.').next().unwrap_or(parts[1])
                )
            } else {
                d.to_string()
            }
        }
        None => String::new(),
    }
}

/// A `Get-MobileDeviceStatistics` row. The device id is `DeviceID` there
/// (`Get-MobileDevice` says `DeviceId`); both are read. The acknowledgement
/// is the later of the two acknowledgement times (account-only and full):
/// which one Exchange fills for an account-only wipe is unverified, and a
/// device may carry an old acknowledgement in the other.
fn parse_statistics(o: &Map<String, Value>) -> DeviceStatistics {
    use field::*;
    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let ack = [ACK_ACCOUNT_ONLY, ACK_FULL]
        .iter()
        .filter_map(|k| o.get(*k).and_then(Value::as_str).and_then(parse_time))
        .max();
    let device_id = Some(s(STATS_DEVICE_ID))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| s(DEVICE_ID));
    DeviceStatistics {
        guid: DeviceGuid::parse(&s(GUID)).ok(),
        device_id,
        status: s(STATUS),
        wipe_acked_at: ack,
        last_sync_ms: o
            .get(LAST_SUCCESS_SYNC)
            .and_then(Value::as_str)
            .and_then(parse_time),
    }
}

/// `Get-MobileDevice` rows as devices. Every device must name its mailbox,
/// and all the same one: a list Exchange did not filter by -Mailbox is
/// refused whole.
fn parse_devices(rows: &[Value], upn: &Upn) -> Result<Vec<MobileDevice>, CallError> {
    use field::*;
    let mut devices = vec![];
    for r in rows {
        let Some(o) = r.as_object() else { continue };
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let guid = DeviceGuid::parse(&s(GUID)).map_err(|e| {
            CallError::permanent(format!(
                "Get-MobileDevice returned a device without a valid Guid: {e}"
            ))
        })?;
        let eas = s(EAS_VERSION);
        let client_version = s(CLIENT_VERSION);
        devices.push(MobileDevice {
            guid,
            identity: s(IDENTITY),
            device_id: s(DEVICE_ID),
            device_type: s(DEVICE_TYPE),
            model: s(MODEL),
            os: s(OS),
            user_agent: s(USER_AGENT),
            client_type: ClientType::parse(&s(CLIENT_TYPE)),
            eas_version: EasVersion::parse(&eas).or_else(|| EasVersion::parse(&client_version)),
            client_version: if client_version.is_empty() {
                eas
            } else {
                client_version
            },
            first_sync_ms: o
                .get(FIRST_SYNC)
                .and_then(Value::as_str)
                .and_then(parse_time),
            last_sync_ms: None,
            class: None,
        });
    }
    if let Some(d) = devices
        .iter()
        .find(|d| identity_mailbox(&d.identity).is_none())
    {
        return Err(CallError::permanent(format!(
            "Get-MobileDevice -Mailbox {upn} returned a device whose Identity ('{}') does not name its mailbox; refusing to act on any device",
            d.identity
        )));
    }
    let mut owners: Vec<String> = devices
        .iter()
        .filter_map(|d| identity_mailbox(&d.identity))
        .map(|m| m.to_ascii_lowercase())
        .collect();
    owners.sort();
    owners.dedup();
    if owners.len() > 1 {
        return Err(CallError::permanent(format!(
            "Get-MobileDevice -Mailbox {upn} returned devices of {} different mailboxes; refusing to act on any of them",
            owners.len()
        )));
    }
    Ok(devices)
}

/// Does a failed command's reason name this Exchange exception? (The
/// readable reason ends with the exception's short name: `error_message`.)
fn names_exception(e: &CallError, exception: &str) -> bool {
    e.reason().contains(exception)
}

fn same_origin(link: &str, base: &str) -> bool {
    match (reqwest::Url::parse(link), reqwest::Url::parse(base)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    // Exchange reports "never" as year 1 in some fields.
    (t.year() > 2000).then(|| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_safe_by_construction() {
        let upn = Upn::parse("a@contoso.com").unwrap();
        let g = DeviceGuid::parse("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a").unwrap();
        let get = Command::GetMobileDevice {
            mailbox: upn.clone(),
        }
        .body();
        assert_eq!(get["CmdletInput"]["Parameters"]["Mailbox"], "a@contoso.com");
        let clear = Command::ClearAccountOnly {
            identity: g.clone(),
            notify: vec![],
        }
        .body();
        assert_eq!(clear["CmdletInput"]["Parameters"]["AccountOnly"], true);
        assert_eq!(clear["CmdletInput"]["Parameters"]["Confirm"], false);
        let cancel = Command::CancelWipe { identity: g }.body();
        assert_eq!(cancel["CmdletInput"]["Parameters"]["Cancel"], true);
        assert_eq!(
            cancel["CmdletInput"]["Parameters"]["AccountOnly"], true,
            "every Clear-MobileDevice carries AccountOnly"
        );
    }

    #[test]
    fn the_doctors_commands_only_read_and_always_carry_their_filter() {
        let p = uuid::Uuid::parse_str("a45c8de5-ff22-5b6d-8600-04674beb35b9").unwrap();
        let a = Command::GetRoleAssignments { assignee: p };
        assert!(a.reads());
        assert_eq!(
            a.body()["CmdletInput"]["Parameters"]["RoleAssignee"],
            "a45c8de5-ff22-5b6d-8600-04674beb35b9"
        );
        let e = Command::GetRoleEntry {
            role: RoleName::parse("wipehook Mobile Wipe").unwrap(),
            cmdlet: "Clear-MobileDevice",
        };
        assert!(e.reads());
        assert_eq!(e.cmdlet(), "Get-ManagementRoleEntry");
        assert_eq!(
            e.body()["CmdletInput"]["Parameters"]["Identity"],
            "wipehook Mobile Wipe\\Clear-MobileDevice"
        );
        for bad in ["", "*", "Mail*", "a\\b", "  "] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?} names one role");
        }
    }

    #[test]
    fn the_field_lists_are_what_the_parsers_read() {
        // A row with exactly the listed names parses into non-empty values...
        let mut row = serde_json::Map::new();
        for f in DEVICE_FIELDS {
            row.insert(f.names[0].to_string(), json!("x"));
        }
        row.insert("Guid".into(), json!("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a"));
        row.insert(
            "Identity".into(),
            json!("a\\ExchangeActiveSyncDevices\\iPhone§X"),
        );
        row.insert("ClientType".into(), json!("EAS"));
        row.insert("DeviceActiveSyncVersion".into(), json!("16.1"));
        let upn = Upn::parse("a@contoso.com").unwrap();
        let rows = vec![Value::Object(row.clone())];
        let d = &parse_devices(&rows, &upn).unwrap()[0];
        for v in [&d.device_id, &d.device_type, &d.model, &d.os, &d.user_agent] {
            assert_eq!(v, "x");
        }
        assert_eq!(
            FieldProbe::of(&rows, DEVICE_FIELDS),
            FieldProbe {
                rows: 1,
                ..Default::default()
            }
        );
        // ...and each field taken away is reported by its name.
        for f in DEVICE_FIELDS {
            let mut r = row.clone();
            for n in f.names {
                r.remove(*n);
            }
            let p = FieldProbe::of(&[Value::Object(r)], DEVICE_FIELDS);
            if f.required {
                assert_eq!(p.missing, vec![f.names.join(" or ")]);
            } else {
                assert!(p.missing.is_empty(), "an optional field only warns");
                assert_eq!(p.absent_optional.len(), 1);
            }
        }
        let mut stats = serde_json::Map::new();
        for f in STATISTICS_FIELDS {
            stats.insert(f.names[0].to_string(), json!("x"));
        }
        let s = parse_statistics(&stats);
        assert_eq!((s.device_id.as_str(), s.status.as_str()), ("x", "x"));
        stats.remove("AccountOnlyDeviceWipeAckTime");
        let p = FieldProbe::of(&[Value::Object(stats)], STATISTICS_FIELDS);
        assert!(p.missing.is_empty(), "the acknowledgement fields only warn");
        assert_eq!(p.absent_optional.len(), 1);
    }

    #[test]
    fn statistics_are_read_as_exchange_names_them() {
        let row: Value = serde_json::from_str(
            r#"{"Guid":"6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a","DeviceID":"ABC","Status":"x",
                "AccountOnlyDeviceWipeAckTime":"2025-01-01T00:00:00.0000000+00:00",
                "DeviceWipeAckTime":"2026-12-01T10:00:00.0000000+00:00"}"#,
        )
        .unwrap();
        let s = parse_statistics(row.as_object().unwrap());
        assert_eq!(s.device_id, "ABC", "DeviceID, not DeviceId");
        let later = parse_time("2026-12-01T10:00:00.0000000+00:00").unwrap();
        assert_eq!(s.wipe_acked_at, Some(later), "the later of the two");
        assert!(!s.acknowledged_since(later + 3_600_000));
        let old: Value = serde_json::from_str(r#"{"DeviceId":"OLD"}"#).unwrap();
        assert_eq!(parse_statistics(old.as_object().unwrap()).device_id, "OLD");
    }

    #[test]
    fn error_envelope_is_readable() {
        let v: Value = serde_json::from_str(r#"{"error":{"code":"NotFound","message":"Error executing cmdlet","details":[{"message":"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'x' couldn't be found."}]}}"#).unwrap();
        assert_eq!(
            error_message(&v),
            "The operation couldn't be performed because object 'x' couldn't be found. (ManagementObjectNotFoundException)"
        );
        assert!(matches!(
            classify(
                400,
                None,
                "You have reached the maximum number of concurrent requests per tenant. Please wait and try again",
                true
            ),
            Reply::Throttled { capped: true, .. }
        ));
        assert!(matches!(classify(503, None, "", true), Reply::Retry(..)));
        assert!(
            matches!(
                classify(500, None, "<html>500</html>", true),
                Reply::Retry(..)
            ),
            "a plain 500 is retried"
        );
        let cmdlet_500 = r#"{"error":{"code":"InternalServerError","message":"x","details":[{"message":"Ex1|Microsoft.Exchange.Management.Tasks.DeviceDoesNotSupportAccountOnlyWipeException|no"}]}}"#;
        assert!(
            matches!(classify(500, None, cmdlet_500, false), Reply::Fail(r) if r.contains("the cmdlet failed")),
            "a cmdlet's error is final"
        );
        assert!(matches!(classify(404, None, "{}", true), Reply::Fail(..)));
        assert!(
            matches!(classify(200, None, "", false), Reply::Ok(..)),
            "an empty answer to a wipe is not a reason to send it again"
        );
        assert!(matches!(classify(200, None, "", true), Reply::Retry(..)));
        let device_named_like_the_throttle =
            r#"{"value":[{"DeviceModel":"maximum number of concurrent requests per tenant"}]}"#;
        assert!(matches!(
            classify(200, None, device_named_like_the_throttle, true),
            Reply::Ok(..)
        ));
        assert!(same_origin(
            "https://outlook.office365.com/adminapi/beta/x?$skiptoken=1",
            "https://outlook.office365.com"
        ));
        assert!(!same_origin(
            "https://outlook.office365.com.evil.example/x",
            "https://outlook.office365.com"
        ));
        assert_eq!(
            identity_mailbox("jdoe\\ExchangeActiveSyncDevices\\iPhone§X"),
            Some("jdoe")
        );
    }
}
