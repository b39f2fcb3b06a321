//! What a mobile device is, as the policy reads it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DeviceGuid;

/// Exchange's mobile-device client types. `Other` keeps what Exchange said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientType {
    Eas,
    Outlook,
    Rest,
    Other(String),
}

impl ClientType {
    pub fn parse(raw: &str) -> ClientType {
        match raw.trim().to_ascii_lowercase().as_str() {
            "eas" => ClientType::Eas,
            "outlook" => ClientType::Outlook,
            "rest" => ClientType::Rest,
            _ => ClientType::Other(raw.trim().to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            ClientType::Eas => "EAS",
            ClientType::Outlook => "Outlook",
            ClientType::Rest => "REST",
            ClientType::Other(s) => s,
        }
    }
}

/// An EAS protocol version such as "16.1"; compared numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EasVersion(pub u32, pub u32);

impl EasVersion {
    pub const ACCOUNT_ONLY_MIN: EasVersion = EasVersion(16, 1);
    pub fn parse(raw: &str) -> Option<EasVersion> {
        let mut it = raw.trim().split('.');
        let major = it.next()?.trim().parse().ok()?;
        let minor = it
            .next()
            .map(|m| m.trim().parse().ok())
            .unwrap_or(Some(0))?;
        Some(EasVersion(major, minor))
    }
}

impl fmt::Display for EasVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A mobile device as `Get-MobileDevice` reports it.
#[derive(Clone, Debug)]
pub struct MobileDevice {
    pub guid: DeviceGuid,
    pub identity: String,
    pub device_id: String,
    pub device_type: String,
    pub model: String,
    pub os: String,
    pub user_agent: String,
    pub client_type: ClientType,
    pub client_version: String,
    pub eas_version: Option<EasVersion>,
    /// `FirstSyncTime` (Unix ms), when Exchange gave it.
    pub first_sync_ms: Option<i64>,
    /// `LastSuccessSync` from the statistics (Unix ms), when read.
    pub last_sync_ms: Option<i64>,
    /// The triage (`policy::triage`), set before any decision.
    pub class: Option<(super::DeviceClass, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eas_versions() {
        assert!(EasVersion::parse("16.1").unwrap() >= EasVersion::ACCOUNT_ONLY_MIN);
        assert!(EasVersion::parse("14.1").unwrap() < EasVersion::ACCOUNT_ONLY_MIN);
        assert!(EasVersion::parse("16").unwrap() < EasVersion::ACCOUNT_ONLY_MIN);
        assert!(EasVersion::parse("garbage").is_none());
    }
}
