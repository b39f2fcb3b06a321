//! The options and the data types a test observes: plain data, imported by
//! the services, the state and the facade alike.

use std::time::{Duration, SystemTime};

/// Fixed default tenant GUID of the simulated tenant.
pub const DEFAULT_TENANT_ID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e";
/// Fixed default client id of wipehook's app registration in the simulated tenant.
pub const DEFAULT_CLIENT_ID: &str = "3a7e5b1c-2d4f-4e6a-9b8c-0d1e2f3a4b5c";
/// Fixed subscription GUID that holds the simulated Sentinel workspace.
pub const SUBSCRIPTION_ID: &str = "0b9f8e7d-6c5b-4a39-8271-605f4e3d2c1b";
/// Client id the App Service managed identity endpoint uses when the request has no `client_id`.
pub const DEFAULT_MANAGED_IDENTITY_CLIENT_ID: &str = "9d8c7b6a-5f4e-4d3c-8b2a-190f8e7d6c5b";

/// The ARM id of the simulated Sentinel workspace.
pub(crate) fn workspace_arm_id() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/soc-ws"
    )
}

/// Options for [`SimTenant::start`].
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Tenant GUID.
    pub tenant_id: String,
    /// Added to every Exchange, ARM and Graph call (not token/OIDC).
    pub latency: Duration,
    /// Max concurrent InvokeCommand calls for the tenant; beyond it the call is throttled.
    pub exchange_concurrency_cap: Option<usize>,
    /// wipehook's app registration client id (client_secret credential).
    pub client_id: String,
    /// The accepted client secret.
    pub client_secret: String,
    /// actix workers.
    pub workers: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            tenant_id: DEFAULT_TENANT_ID.to_string(),
            latency: Duration::ZERO,
            exchange_concurrency_cap: None,
            client_id: DEFAULT_CLIENT_ID.to_string(),
            client_secret: "sim-secret".to_string(),
            workers: 2,
        }
    }
}

/// A fault injected into the next InvokeCommand calls (see [`SimTenant::fail_next_exchange`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: <retry_after_secs>` (decimal seconds) and `Rate-Limit-*` headers.
    Throttle429 { retry_after_secs: f64 },
    /// HTTP 400 with the plain-text body "You have reached the maximum number of concurrent
    /// requests per tenant. Please wait and try again".
    ConcurrencyMessage,
    /// A bare status code (500, 503, 504, ...) with an Exchange error envelope as body
    /// (a transient storage exception).
    Status(u16),
    /// A status code with a plain body and no error envelope (a front-end or server fault:
    /// Exchange answers a plain 500 for those too).
    PlainStatus(u16),
    /// A cmdlet's own error: the status (Exchange uses 500 for these too) and an envelope
    /// naming the exception, e.g. `Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException`.
    CmdletError {
        status: u16,
        exception: String,
        text: String,
    },
    /// HTTP 401 with an empty body and a `WWW-Authenticate` header.
    Unauthorized401,
    /// The call is held `ms` milliseconds, then served normally (a hung
    /// backend; the client's timeout may give up first, while the call still
    /// happens).
    Hang { ms: u64 },
    /// The connection is closed without an answer, and the call is not
    /// executed (a front end that dropped it).
    Dropped,
}

/// Which simulated service a [`FaultRule`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Exchange,
    Arm,
    Graph,
}

/// Seeded, reusable fault injection (see [`SimTenant::add_fault_rule`]): a
/// rule matches calls of one service (and optionally one call kind and one
/// subject) and fails a share of them. Whether the n-th call of a (rule, call
/// kind, subject) fails is a function of the seed alone, so a device's faults
/// are the same on every run whatever the order of calls.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    pub service: Service,
    /// Exchange: the cmdlet (`Clear-MobileDevice`); ARM and Graph: a part of
    /// the path (`/entities`, `/comments/`). `None`: every call.
    pub call: Option<String>,
    /// Exchange only: the call's `Identity` or `Mailbox` parameter. `None`: any.
    pub subject: Option<String>,
    /// The share of matching calls that fail, 0.0 to 1.0.
    pub rate: f64,
    /// The faults, each with a weight.
    pub faults: Vec<(u32, Fault)>,
    /// At most this many faults from the rule (`None`: no limit).
    pub limit: Option<usize>,
}

impl FaultRule {
    /// Every call of `service` fails with `fault` (until the rule is removed).
    pub fn always(service: Service, fault: Fault) -> FaultRule {
        FaultRule {
            service,
            call: None,
            subject: None,
            rate: 1.0,
            faults: vec![(1, fault)],
            limit: None,
        }
    }
    /// A share `rate` of the calls of `service` fail with one of `faults`.
    pub fn mix(service: Service, rate: f64, faults: Vec<(u32, Fault)>) -> FaultRule {
        FaultRule {
            service,
            call: None,
            subject: None,
            rate,
            faults,
            limit: None,
        }
    }
    pub fn call(mut self, call: &str) -> FaultRule {
        self.call = Some(call.to_string());
        self
    }
    pub fn subject(mut self, subject: &str) -> FaultRule {
        self.subject = Some(subject.to_string());
        self
    }
    pub fn limit(mut self, n: usize) -> FaultRule {
        self.limit = Some(n);
        self
    }
}

/// A fault a [`FaultRule`] injected, for tests and the benchmark to read.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectedFault {
    pub rule: usize,
    pub service: Service,
    pub call: String,
    pub subject: String,
    pub fault: Fault,
    pub at: SystemTime,
}

/// What kind of mobile device a mailbox has.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    /// "EAS" | "Outlook" | "REST"
    pub client_type: String,
    /// e.g. "iPhone", "Outlook", "Android"
    pub device_type: String,
    pub model: String,
    pub os: String,
    /// e.g. "16.1" or "14.1"
    pub eas_version: String,
    pub user_agent: String,
}

impl DeviceSpec {
    /// Native iOS Mail over Exchange ActiveSync 16.1.
    pub fn iphone() -> Self {
        DeviceSpec {
            client_type: "EAS".into(),
            device_type: "iPhone".into(),
            model: "iPhone15C2".into(),
            os: "iOS 17.4 21E219".into(),
            eas_version: "16.1".into(),
            user_agent: "Apple-iPhone15C2/2104.219".into(),
        }
    }
    /// Outlook for iOS and Android (REST sync; one device association per user).
    pub fn outlook() -> Self {
        DeviceSpec {
            client_type: "REST".into(),
            device_type: "Outlook".into(),
            model: "Outlook for iOS and Android".into(),
            os: "Outlook for iOS and Android 1.0".into(),
            eas_version: "16.1".into(),
            user_agent: "Outlook-iOS-Android/1.0".into(),
        }
    }
    /// A native Android mail app (Samsung Email) over EAS 16.1.
    pub fn android_native_eas() -> Self {
        DeviceSpec {
            client_type: "EAS".into(),
            device_type: "Android".into(),
            model: "SM-S918B".into(),
            os: "Android 14.0.0".into(),
            eas_version: "16.1".into(),
            user_agent: "Android-SAMSUNG-SM-S918B/101.140001".into(),
        }
    }
    /// An old EAS 14.1 client: it cannot do an account-only wipe.
    pub fn old_eas() -> Self {
        DeviceSpec {
            client_type: "EAS".into(),
            device_type: "Android".into(),
            model: "GT-I9505".into(),
            os: "Android 5.0.1".into(),
            eas_version: "14.1".into(),
            user_agent: "Android-SAMSUNG-GT-I9505/101.50101".into(),
        }
    }
}

/// One InvokeCommand request as the sim received it.
#[derive(Clone, Debug)]
pub struct ExchangeCall {
    /// `CmdletInput.CmdletName` ("" when the body could not be parsed).
    pub cmdlet: String,
    /// `CmdletInput.Parameters` (JSON null when absent).
    pub parameters: serde_json::Value,
    /// `X-AnchorMailbox` header.
    pub anchor_mailbox: Option<String>,
    /// HTTP status the sim answered with (0 while in flight; 444 when the
    /// connection was dropped without an answer).
    pub response_status: u16,
    /// Arrival time.
    pub at: SystemTime,
    /// When the answer was sent (`None` while in flight).
    pub answered_at: Option<SystemTime>,
}

/// A comment currently on an incident.
#[derive(Clone, Debug)]
pub struct SimComment {
    pub id: String,
    pub message: String,
    /// The text as first written: what the Defender portal shows (it does
    /// not show edits of comments).
    pub first_message: String,
    /// Number of PUTs received for this comment id.
    pub puts: usize,
}

/// A comment as an analyst in the Defender portal reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefenderComment {
    /// "sentinel" (a Sentinel comment, as first written) or "graph" (posted
    /// to the Defender incident through Graph security).
    pub source: &'static str,
    pub text: String,
}

/// The state of one simulated mobile device.
#[derive(Clone, Debug)]
pub struct SimDevice {
    pub guid: String,
    pub upn: String,
    pub spec: DeviceSpec,
    /// Time of the last (non-cancelled) wipe request; re-stamped by every request.
    pub wipe_requested_at: Option<time::OffsetDateTime>,
    /// The pending/last request was account-only.
    pub account_only: bool,
    /// A FULL device wipe was ever requested (sticky; cancel does not clear it).
    pub full_wipe_requested: bool,
    /// The device acknowledged the wipe (set by [`SimTenant::sync_device`]).
    pub wipe_acked_at: Option<time::OffsetDateTime>,
    pub cancel_count: usize,
    pub wipe_request_count: usize,
    /// Report the acknowledgement of an account-only wipe in `DeviceWipeAckTime` instead of
    /// `AccountOnlyDeviceWipeAckTime` (which field Exchange fills is unverified).
    pub ack_in_full_wipe_field: bool,
    /// An acknowledgement of an earlier wipe, reported in the field the current wipe does
    /// not use.
    pub stale_ack: Option<time::OffsetDateTime>,
    /// The Guid `Get-MobileDeviceStatistics` reports, when it differs from `Get-MobileDevice`'s.
    pub statistics_guid: Option<String>,
    /// The wipe command was sent to the device (set by [`SimTenant::sync_device`]).
    pub wipe_sent_at: Option<time::OffsetDateTime>,
    /// Last successful sync of the device.
    pub last_success_sync: Option<time::OffsetDateTime>,
    /// `NotificationEmailAddresses` of the last Clear-MobileDevice call that executed.
    pub notification_email_addresses: Vec<String>,
    /// EAS DeviceId.
    pub device_id: String,
    /// `<upn-local>\ExchangeActiveSyncDevices\...` identity.
    pub identity: String,
    pub first_sync_time: time::OffsetDateTime,
}

/// One token request the sim served (successful or not).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub client_id: String,
    /// The `scope` (client credentials) or `resource` (managed identity) as sent.
    pub scope_or_resource: String,
    /// "client_credentials" | "managed_identity"
    pub kind: String,
}

/// One ARM or Graph request as the sim received it.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// "GET", "POST", "PUT", ...
    pub method: String,
    pub path: String,
    /// The query string as sent ("" when none).
    pub query: String,
    /// HTTP status the sim answered with.
    pub status: u16,
}

/// What kind of service principal a caller is in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A managed identity (a Logic App's system-assigned identity).
    ManagedIdentity,
    /// An app registration's service principal.
    Application,
}
