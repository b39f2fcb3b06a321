//! Mutable state of the simulated tenant (behind one std Mutex; never held across `.await`).

use std::collections::VecDeque;
use std::time::Duration;

use time::OffsetDateTime;

use crate::directory::Directory;
use crate::types::{
    DeviceSpec, ExchangeCall, Fault, HttpCall, SimDevice, SimOptions, TokenRequest,
};

/// A directory user and its Exchange Online mailbox (every simulated user has one).
#[derive(Clone, Debug)]
pub(crate) struct User {
    /// Lower case.
    pub upn: String,
    pub object_id: String,
    pub display_name: String,
    /// The mailbox's alias (also its `Name`/`Identity`).
    pub alias: String,
    /// Lower case; defaults to the UPN.
    pub primary_smtp: String,
    /// Further SMTP addresses (lower case).
    pub proxies: Vec<String>,
    pub recipient_type: String,
    /// `accountEnabled`.
    pub enabled: bool,
    /// `onPremisesSyncEnabled`.
    pub on_premises_synced: bool,
    /// When `revokeSignInSessions` was last called.
    pub sessions_revoked_at: Option<OffsetDateTime>,
    /// Confirmed compromised in Identity Protection.
    pub confirmed_compromised: bool,
    /// `CASMailbox.ActiveSyncBlockedDeviceIDs`.
    pub blocked_device_ids: Vec<String>,
}

impl User {
    fn new(upn: &str, object_id: &str) -> User {
        let upn = upn.to_ascii_lowercase();
        let local = upn.split('@').next().unwrap_or(&upn).to_string();
        let display_name = local
            .split(['.', '_', '-'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        User {
            primary_smtp: upn.clone(),
            upn,
            object_id: object_id.to_ascii_lowercase(),
            display_name,
            alias: local,
            proxies: Vec::new(),
            recipient_type: "UserMailbox".into(),
            enabled: true,
            on_premises_synced: false,
            sessions_revoked_at: None,
            confirmed_compromised: false,
            blocked_device_ids: Vec::new(),
        }
    }
    /// Every SMTP address of the mailbox.
    pub fn smtp_addresses(&self) -> Vec<String> {
        let mut v = vec![self.primary_smtp.clone()];
        v.extend(
            self.proxies
                .iter()
                .filter(|p| **p != self.primary_smtp)
                .cloned(),
        );
        v
    }
    /// Does `l` (an id already trimmed and lowercased, once per look-up, not
    /// once per user) name this mailbox the way Exchange resolves an
    /// identity (UPN, any SMTP address, object id, alias)?
    fn answers_to(&self, l: &str) -> bool {
        self.upn == l
            || self.primary_smtp == l
            || self.proxies.iter().any(|p| p == l)
            || self.object_id == l
            || self.alias == l
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Comment {
    pub id: String,
    pub message: String,
    /// As first written (the Defender portal shows no edits).
    pub first_message: String,
    pub puts: usize,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
    pub etag: String,
    pub author_oid: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Incident {
    pub name: String,
    pub entities: Vec<serde_json::Value>,
    /// `SecurityAlert` entities (ARM shape), as `POST {incident}/alerts` lists them.
    pub alerts: Vec<serde_json::Value>,
    /// The Defender incident id (`providerIncidentId`), when set.
    pub defender_id: Option<String>,
    /// Comments posted to the Defender incident through Graph security.
    pub defender_comments: Vec<String>,
    pub comments: Vec<Comment>,
}

/// Another tenant served by the same simulated cloud (an MSSP's customer):
/// its own Exchange concurrency cap and its own Sentinel workspace; the
/// directory, mailboxes and incidents are the sim's one namespace (give each
/// tenant its own user and incident names).
pub(crate) struct HostedTenant {
    pub tenant_id: String,
    /// The workspace's ARM id.
    pub workspace: String,
    pub cap: Option<usize>,
    pub in_flight: usize,
    pub next_throttle_is_message: bool,
}

pub(crate) struct State {
    pub latency: Duration,
    pub cap: Option<usize>,
    pub exchange_in_flight: usize,
    /// Alternates the concurrency-cap answer between 429 and the concurrency message.
    pub next_throttle_is_message: bool,
    pub throttled: usize,
    pub oidc_up: bool,
    pub jwks_fetches: usize,
    pub rotated: bool,
    /// Other tenants the simulated Entra publishes keys for (MSSP tests):
    /// identity only, no directory, mailboxes or workspace of their own.
    pub foreign_tenants: Vec<String>,
    /// Tenants served beside the sim's own (`SimTenant::host_tenant`).
    pub hosted: Vec<HostedTenant>,
    /// Syncs Exchange refused (blocked device, revoked or disabled account).
    pub refused_syncs: usize,
    /// The tenant has Entra ID P2 (Identity Protection): confirmCompromised works.
    pub p2: bool,
    /// Directory users, each with its mailbox.
    pub users: Vec<User>,
    pub devices: Vec<SimDevice>,
    pub incidents: Vec<Incident>,
    pub exchange_calls: Vec<ExchangeCall>,
    pub comment_puts: usize,
    pub token_requests: Vec<TokenRequest>,
    pub exchange_faults: VecDeque<Fault>,
    /// Faults for the next calls of one cmdlet, in order.
    pub cmdlet_faults: VecDeque<(String, Fault)>,
    pub arm_faults: VecDeque<u16>,
    pub graph_faults: VecDeque<u16>,
    /// Seeded fault rules (`faults.rs`): (id, rule, faults injected so far).
    pub fault_rules: Vec<(usize, crate::types::FaultRule, usize)>,
    pub next_fault_rule: usize,
    pub fault_seed: u64,
    /// Calls each (rule, call kind, subject) has seen.
    pub fault_counts: std::collections::HashMap<String, u64>,
    pub fault_log: Vec<crate::types::InjectedFault>,
    /// Rate-Limit window: start (unix seconds) and calls in it.
    pub rate_window_start: i64,
    pub rate_window_calls: u64,
    /// Entra, Azure RBAC and Exchange RBAC: who may do what.
    pub dir: Directory,
    /// Every ARM and Graph request, in arrival order.
    pub arm_calls: Vec<HttpCall>,
    pub graph_calls: Vec<HttpCall>,
    /// Fields Exchange answers under another name: (cmdlet, lower case; field; new name).
    pub renamed_fields: Vec<(String, String, String)>,
    /// `cloud_instance_name` of the OpenID configuration (the tenant's cloud).
    pub cloud_instance_name: String,
    /// Seconds added to the `Date` header of Entra's answers (a skewed clock).
    pub clock_offset_secs: i64,
}

pub(crate) const RATE_LIMIT: u64 = 30000;

impl State {
    pub fn new(opts: &SimOptions) -> State {
        State {
            latency: opts.latency,
            cap: opts.exchange_concurrency_cap,
            exchange_in_flight: 0,
            next_throttle_is_message: false,
            throttled: 0,
            oidc_up: true,
            jwks_fetches: 0,
            rotated: false,
            foreign_tenants: vec![],
            hosted: vec![],
            refused_syncs: 0,
            p2: true,
            users: Vec::new(),
            devices: Vec::new(),
            incidents: Vec::new(),
            exchange_calls: Vec::new(),
            comment_puts: 0,
            token_requests: Vec::new(),
            exchange_faults: VecDeque::new(),
            cmdlet_faults: VecDeque::new(),
            arm_faults: VecDeque::new(),
            graph_faults: VecDeque::new(),
            fault_rules: Vec::new(),
            next_fault_rule: 0,
            fault_seed: 0,
            fault_counts: Default::default(),
            fault_log: Vec::new(),
            rate_window_start: 0,
            rate_window_calls: 0,
            dir: Directory::seeded(&crate::types::workspace_arm_id()),
            arm_calls: Vec::new(),
            graph_calls: Vec::new(),
            renamed_fields: Vec::new(),
            cloud_instance_name: "microsoftonline.com".into(),
            clock_offset_secs: 0,
        }
    }

    /// Rename the fields of a cmdlet's rows as configured (a changed Exchange).
    pub fn rename_fields(&self, cmdlet: &str, rows: &mut [serde_json::Value]) {
        let cmdlet = cmdlet.to_ascii_lowercase();
        for (c, from, to) in &self.renamed_fields {
            if *c != cmdlet {
                continue;
            }
            for row in rows.iter_mut() {
                if let Some(o) = row.as_object_mut()
                    && let Some(v) = o.remove(from.as_str())
                {
                    o.insert(to.clone(), v);
                }
            }
        }
    }

    pub fn add_user(&mut self, upn: &str, object_id: &str) {
        if let Some(u) = self
            .users
            .iter_mut()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
        {
            u.object_id = object_id.to_ascii_lowercase();
        } else {
            self.users.push(User::new(upn, object_id));
        }
    }

    fn ensure_mailbox(&mut self, upn: &str) {
        if !self.users.iter().any(|u| u.upn.eq_ignore_ascii_case(upn)) {
            let oid = uuid::Uuid::new_v4().to_string();
            self.users.push(User::new(upn, &oid));
        }
    }

    pub fn user_mut(&mut self, upn: &str) -> &mut User {
        self.ensure_mailbox(upn);
        self.users
            .iter_mut()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .expect("just ensured")
    }

    /// The mailboxes an identity names (Exchange resolves UPN, SMTP
    /// addresses, object id and alias).
    pub fn matching_mailboxes(&self, id: &str) -> Vec<&User> {
        let l = id.trim().to_ascii_lowercase();
        self.users.iter().filter(|u| u.answers_to(&l)).collect()
    }

    /// Resolves a `Mailbox` parameter to the mailbox UPN, when exactly one answers to it.
    pub fn resolve_mailbox(&self, id: &str) -> Option<String> {
        match self.matching_mailboxes(id).as_slice() {
            [u] => Some(u.upn.clone()),
            _ => None,
        }
    }

    pub fn add_device(&mut self, upn: &str, spec: DeviceSpec) -> String {
        let alias = self.user_mut(upn).alias.clone();
        let guid = uuid::Uuid::new_v4().to_string();
        let raw = uuid::Uuid::new_v4().simple().to_string();
        let device_id = if spec.client_type.eq_ignore_ascii_case("EAS") {
            raw.to_ascii_uppercase()
        } else {
            raw
        };
        let local = alias;
        // EAS: `<DeviceType>§<DeviceId>`; Outlook/REST: `<ClientType>§<DeviceType>§<DeviceId>`
        // (as in the Get-MobileDevice docs: `REST§Outlook§5eec4e94...`).
        let name = if spec.client_type.eq_ignore_ascii_case("EAS") {
            format!("{}§{}", spec.device_type, device_id)
        } else {
            format!("{}§{}§{}", spec.client_type, spec.device_type, device_id)
        };
        let now = OffsetDateTime::now_utc();
        let first = now - time::Duration::days(30);
        self.devices.push(SimDevice {
            guid: guid.clone(),
            upn: upn.to_ascii_lowercase(),
            identity: format!("{local}\\ExchangeActiveSyncDevices\\{name}"),
            device_id,
            spec,
            wipe_requested_at: None,
            account_only: false,
            full_wipe_requested: false,
            wipe_acked_at: None,
            cancel_count: 0,
            wipe_request_count: 0,
            wipe_sent_at: None,
            ack_in_full_wipe_field: false,
            stale_ack: None,
            statistics_guid: None,
            last_success_sync: Some(now - time::Duration::minutes(10)),
            notification_email_addresses: Vec::new(),
            first_sync_time: first,
        });
        guid
    }

    pub fn device_by_guid(&self, guid: &str) -> Option<&SimDevice> {
        self.devices
            .iter()
            .find(|d| d.guid.eq_ignore_ascii_case(guid.trim()))
    }

    /// Resolves a MobileDeviceIdParameter: Guid or `<mailbox>\ExchangeActiveSyncDevices\<name>`.
    pub fn find_device_index(&self, id: &str) -> Option<usize> {
        let id = id.trim();
        self.devices
            .iter()
            .position(|d| d.guid.eq_ignore_ascii_case(id) || d.identity.eq_ignore_ascii_case(id))
    }

    pub fn sync_device(&mut self, guid: &str) {
        let now = OffsetDateTime::now_utc();
        let Some(i) = self
            .devices
            .iter()
            .position(|d| d.guid.eq_ignore_ascii_case(guid.trim()))
        else {
            return;
        };
        // Exchange refuses the phone (nothing is sent, no sync): its device
        // id is blocked for the mailbox, or the account's tokens are refused
        // after a Continuous Access Evaluation critical event (sessions
        // revoked, account disabled). CAE propagation takes up to 15 minutes
        // in Entra; the sim applies it at once.
        let (upn, device_id) = (
            self.devices[i].upn.clone(),
            self.devices[i].device_id.clone(),
        );
        let refused = self.users.iter().any(|u| {
            u.upn == upn
                && (!u.enabled
                    || u.sessions_revoked_at.is_some()
                    || u.blocked_device_ids
                        .iter()
                        .any(|b| b.eq_ignore_ascii_case(&device_id)))
        });
        if refused {
            self.refused_syncs += 1;
            return;
        }
        let d = &mut self.devices[i];
        if d.wipe_requested_at.is_some() && d.wipe_acked_at.is_none() {
            d.wipe_sent_at = Some(now);
            d.wipe_acked_at = Some(now);
        }
        d.last_success_sync = Some(now);
    }

    pub fn add_incident(&mut self, name: &str, entities: serde_json::Value) {
        let list = match entities {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Null => Vec::new(),
            other => vec![other],
        };
        let inc = self.incident_mut_or_create(name);
        inc.entities = list;
    }

    pub fn incident(&self, name: &str) -> Option<&Incident> {
        self.incidents
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(name))
    }

    pub fn incident_mut_or_create(&mut self, name: &str) -> &mut Incident {
        if let Some(i) = self
            .incidents
            .iter()
            .position(|i| i.name.eq_ignore_ascii_case(name))
        {
            return &mut self.incidents[i];
        }
        self.incidents.push(Incident {
            name: name.to_string(),
            entities: Vec::new(),
            alerts: Vec::new(),
            defender_id: None,
            defender_comments: Vec::new(),
            comments: Vec::new(),
        });
        let last = self.incidents.len() - 1;
        &mut self.incidents[last]
    }

    /// Counts one Exchange call in the rate window; returns (remaining, reset unix secs).
    pub fn rate_tick(&mut self) -> (u64, i64) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if now - self.rate_window_start >= 60 {
            self.rate_window_start = now;
            self.rate_window_calls = 0;
        }
        self.rate_window_calls += 1;
        (
            RATE_LIMIT.saturating_sub(self.rate_window_calls),
            self.rate_window_start + 60,
        )
    }
}
