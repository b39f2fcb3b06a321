//! Identifiers: raw strings from the outside become these once, at the edge
//! (parse, don't validate); everything past the edge holds only valid values,
//! and a function that takes two of them cannot have them swapped.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A user principal name: `local@domain`, lower-cased, with a non-empty local
/// part and a domain that has at least one dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Upn(String);

impl Upn {
    pub fn parse(raw: &str) -> Result<Upn, String> {
        let s = raw.trim().to_ascii_lowercase();
        let Some((local, domain)) = s.split_once('@') else {
            return Err(format!("'{raw}' is not a UPN (no '@')"));
        };
        if local.is_empty() {
            return Err(format!("'{raw}' has an empty name before '@'"));
        }
        if domain.is_empty() {
            return Err(format!("'{raw}' has an empty UPN suffix"));
        }
        if domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(format!("'{raw}' has an invalid UPN suffix"));
        }
        // Wildcards and separators could make Exchange resolve something
        // other than this one mailbox (and dodge the protected list).
        if s.len() > 320
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"\\*?%,;:()<>[]{}|".contains(c))
        {
            return Err(format!("'{raw}' contains characters a UPN cannot have"));
        }
        // Invisible format characters (RLO, ZWSP, BOM, RLM...) make an
        // address look like another one on the record while Exchange reads
        // something else.
        if let Some(c) = s.chars().find(|&c| is_format_char(c)) {
            return Err(format!(
                "'{}' contains an invisible format character (U+{:04X}); refused",
                visible(raw),
                c as u32
            ));
        }
        Ok(Upn(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

/// `s` with control and invisible format characters shown as `\u{..}`, so
/// the record never displays an address that reads as another one.
pub fn visible(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_format_char(c) {
            o.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            o.push(c);
        }
    }
    o
}

/// Unicode general category Cf (format characters), which are invisible.
pub fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

impl TryFrom<String> for Upn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Upn::parse(&s)
    }
}
impl From<Upn> for String {
    fn from(u: Upn) -> String {
        u.0
    }
}
impl fmt::Display for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run's id (a UUIDv7, so ids sort by creation time).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub fn new() -> RunId {
        RunId(uuid::Uuid::now_v7().to_string())
    }
    pub fn parse(raw: &str) -> Result<RunId, String> {
        uuid::Uuid::parse_str(raw.trim())
            .map(|u| RunId(u.hyphenated().to_string()))
            .map_err(|_| format!("run id '{}' is not a UUID", visible(raw)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}
impl TryFrom<String> for RunId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RunId::parse(&s)
    }
}
impl From<RunId> for String {
    fn from(r: RunId) -> String {
        r.0
    }
}
impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(String);

impl TaskId {
    pub fn new() -> TaskId {
        TaskId(uuid::Uuid::now_v7().to_string())
    }
    /// A task id as stored (the store wrote it).
    pub fn from_stored(s: String) -> TaskId {
        TaskId(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl Default for TaskId {
    fn default() -> Self {
        TaskId::new()
    }
}
impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant GUID, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<TenantId, String> {
        uuid::Uuid::parse_str(raw.trim())
            .map(|u| TenantId(u.hyphenated().to_string()))
            .map_err(|_| format!("tenant id '{raw}' is not a GUID"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TenantId::parse(&s)
    }
}
impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}
impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ARM resource id of a Log Analytics workspace, normalised to lower case
/// for comparison (ARM ids are case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkspaceRef {
    pub subscription: String,
    pub resource_group: String,
    pub workspace: String,
}

impl WorkspaceRef {
    pub fn parse(raw: &str) -> Result<WorkspaceRef, String> {
        let segs: Vec<&str> = raw.trim().trim_end_matches('/').split('/').collect();
        // "", subscriptions, S, resourceGroups, RG, providers, Microsoft.OperationalInsights, workspaces, WS
        if segs.len() == 9
            && segs[0].is_empty()
            && segs[1].eq_ignore_ascii_case("subscriptions")
            && segs[3].eq_ignore_ascii_case("resourcegroups")
            && segs[5].eq_ignore_ascii_case("providers")
            && segs[6].eq_ignore_ascii_case("microsoft.operationalinsights")
            && segs[7].eq_ignore_ascii_case("workspaces")
            && [2, 4, 8].iter().all(|&i| valid_segment(segs[i]))
        {
            Ok(WorkspaceRef {
                subscription: segs[2].to_ascii_lowercase(),
                resource_group: segs[4].to_ascii_lowercase(),
                workspace: segs[8].to_ascii_lowercase(),
            })
        } else {
            Err(format!(
                "'{raw}' is not a Log Analytics workspace resource id"
            ))
        }
    }
    pub fn arm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}",
            self.subscription, self.resource_group, self.workspace
        )
    }
    /// The id as the path of an upstream URL: each segment percent-encoded.
    pub fn url_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}",
            encode_segment(&self.subscription),
            encode_segment(&self.resource_group),
            encode_segment(&self.workspace)
        )
    }
}

/// A path segment of an ARM id: the characters ARM names use, and never a
/// dot segment (`.`, `..`: a URL built from it would land on another path).
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s.chars().all(|c| c == '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// A path segment percent-encoded for a URL (everything but RFC 3986's
/// unreserved characters), so a name is always one segment of the path.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A Sentinel incident, by its ARM resource id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRef {
    pub workspace: WorkspaceRef,
    /// The incident's name (a GUID in practice), as given.
    pub name: String,
}

impl IncidentRef {
    pub fn parse(raw: &str) -> Result<IncidentRef, String> {
        let s = raw.trim().trim_end_matches('/');
        let lower = s.to_ascii_lowercase();
        let marker = "/providers/microsoft.securityinsights/incidents/";
        let Some(pos) = lower.find(marker) else {
            return Err(format!("'{raw}' is not a Sentinel incident resource id"));
        };
        let workspace = WorkspaceRef::parse(&s[..pos])?;
        let name = &s[pos + marker.len()..];
        if !valid_segment(name) {
            return Err(format!("'{raw}' has an invalid incident name"));
        }
        Ok(IncidentRef {
            workspace,
            name: name.to_string(),
        })
    }
    /// The canonical ARM id (the store key, and what the record names).
    pub fn arm_id(&self) -> String {
        format!(
            "{}/providers/Microsoft.SecurityInsights/Incidents/{}",
            self.workspace.arm_id(),
            self.name
        )
    }
    /// The id as the path of an ARM call: each segment percent-encoded.
    pub fn url_path(&self) -> String {
        format!(
            "{}/providers/Microsoft.SecurityInsights/Incidents/{}",
            self.workspace.url_path(),
            encode_segment(&self.name)
        )
    }
}

impl fmt::Display for IncidentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arm_id())
    }
}

/// An Exchange mobile device's `Guid` (its ExchangeObjectId), the only
/// identity wipehook ever passes to Clear-MobileDevice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceGuid(String);

impl DeviceGuid {
    pub fn parse(raw: &str) -> Result<DeviceGuid, String> {
        uuid::Uuid::parse_str(raw.trim())
            .map(|u| DeviceGuid(u.hyphenated().to_string()))
            .map_err(|_| format!("device Guid '{raw}' is not a GUID"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for DeviceGuid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DeviceGuid::parse(&s)
    }
}
impl From<DeviceGuid> for String {
    fn from(d: DeviceGuid) -> String {
        d.0
    }
}
impl fmt::Display for DeviceGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stored forms parse back through the same checks.
macro_rules! from_str_via_parse {
    ($($t:ty),+) => {$(
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t>::parse(s)
            }
        }
    )+};
}
from_str_via_parse!(RunId, TenantId, DeviceGuid, IncidentRef);

/// A stored address, as an earlier version stored it: the rules of
/// `Upn::parse` have tightened (invisible characters), and a row written
/// before must still be readable. Whoever acts on it checks it again with
/// `Upn::parse`.
impl std::str::FromStr for Upn {
    type Err = String;
    fn from_str(s: &str) -> Result<Upn, String> {
        match Upn::parse(s) {
            Ok(u) => Ok(u),
            Err(_) if s.contains('@') && !s.trim().is_empty() => {
                Ok(Upn(s.trim().to_ascii_lowercase()))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upn_parsing() {
        assert_eq!(
            Upn::parse(" JDoe@Contoso.com ").unwrap().as_str(),
            "jdoe@contoso.com"
        );
        assert!(Upn::parse("jdoe@").is_err());
        assert!(Upn::parse("jdoe").is_err());
        assert!(Upn::parse("@contoso.com").is_err());
        assert!(Upn::parse("a@b@contoso.com").is_err());
        assert!(Upn::parse("a b@contoso.com").is_err());
        assert!(Upn::parse("breakgl*@contoso.com").is_err(), "no wildcards");
        assert!(Upn::parse("a%b@contoso.com").is_err());
        assert!(Upn::parse("o'brien@contoso.com").is_ok());
        for invisible in ['\u{202E}', '\u{200B}', '\u{FEFF}', '\u{200F}', '\u{00AD}'] {
            let s = format!("bre{invisible}akglass@contoso.com");
            assert!(
                Upn::parse(&s).unwrap_err().contains("invisible"),
                "{invisible:?}"
            );
        }
        assert_eq!(Upn::parse("x@contoso.com").unwrap().domain(), "contoso.com");
    }

    #[test]
    fn run_ids() {
        let r = RunId::new();
        assert_eq!(RunId::parse(r.as_str()).unwrap(), r);
        assert!(RunId::parse("../etc").is_err());
    }

    #[test]
    fn incident_ref_parsing() {
        let id = "/subscriptions/0000-1/resourceGroups/My-RG/providers/Microsoft.OperationalInsights/workspaces/ws1/providers/Microsoft.SecurityInsights/Incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5";
        let r = IncidentRef::parse(id).unwrap();
        assert_eq!(r.workspace.resource_group, "my-rg");
        assert_eq!(r.name, "73e01a99-5cd7-4139-a149-9f2736ff2ab5");
        assert!(IncidentRef::parse("/subscriptions/x/incidents/y").is_err());
        assert!(IncidentRef::parse(&format!("{id}/../../x")).is_err());
        let lower = id.to_ascii_lowercase().replace("incidents", "incidents");
        assert_eq!(IncidentRef::parse(&lower).unwrap().workspace, r.workspace);
    }
}
