//! The cloud: presets (public, US Government, China) and per-URL overrides,
//! resolved once into `Cloud`, where every value is present.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CloudSettings {
    /// Preset: `public`, `usgov` (GCC High), `usgov-dod` (DoD), `china`.
    /// Every URL below overrides it.
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
            // GCC High (US Government L4).
            "usgov" => (
                "https://login.microsoftonline.us",
                "https://outlook.office365.us",
                "https://management.usgovcloudapi.net",
                "https://graph.microsoft.us",
            ),
            // DoD (US Government L5): its own Exchange and Graph hosts, and
            // tokens requested for them (Microsoft's CSS-Exchange endpoint
            // table, USGovernmentL5; the M365 US Government DoD endpoints).
            "usgov-dod" => (
                "https://login.microsoftonline.us",
                "https://outlook-dod.office365.us",
                "https://management.usgovcloudapi.net",
                "https://dod-graph.microsoft.us",
            ),
            "china" => (
                "https://login.chinacloudapi.cn",
                "https://partner.outlook.cn",
                "https://management.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
            other => {
                return Err(format!(
                    "cloud.name '{other}' is not one of public, usgov, usgov-dod, china"
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

/// The Microsoft hosts wipehook knows, with the clouds each belongs to:
/// the presets above, and the alternative hosts the team's notes name
/// (`login.windows.net`, `outlook.office.com`, `webmail.apps.mil`,
/// `login.partner.microsoftonline.cn`). The one table `wipehook doctor`
/// judges "no mix of public and sovereign hosts" by; the sovereign Exchange
/// hosts are as unverified as the presets.
const HOSTS: &[(&str, &[&str])] = &[
    ("login.microsoftonline.com", &["public"]),
    ("login.windows.net", &["public"]),
    ("outlook.office365.com", &["public"]),
    ("outlook.office.com", &["public"]),
    ("management.azure.com", &["public"]),
    ("management.core.windows.net", &["public"]),
    ("graph.microsoft.com", &["public"]),
    ("login.microsoftonline.us", &["usgov", "usgov-dod"]),
    ("outlook.office365.us", &["usgov"]),
    ("outlook-dod.office365.us", &["usgov-dod"]),
    ("webmail.apps.mil", &["usgov-dod"]),
    ("management.usgovcloudapi.net", &["usgov", "usgov-dod"]),
    ("management.core.usgovcloudapi.net", &["usgov", "usgov-dod"]),
    ("graph.microsoft.us", &["usgov"]),
    ("dod-graph.microsoft.us", &["usgov-dod"]),
    ("login.chinacloudapi.cn", &["china"]),
    ("login.partner.microsoftonline.cn", &["china"]),
    ("partner.outlook.cn", &["china"]),
    ("management.chinacloudapi.cn", &["china"]),
    ("management.core.chinacloudapi.cn", &["china"]),
    ("microsoftgraph.chinacloudapi.cn", &["china"]),
];

/// The clouds a host belongs to; `None` for a host that is not one of
/// Microsoft's (a private endpoint, a proxy, the simulated tenant).
pub fn clouds_of_host(host: &str) -> Option<&'static [&'static str]> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    HOSTS.iter().find(|(n, _)| *n == h).map(|(_, c)| *c)
}

/// The `cloud_instance_name` a tenant's OpenID configuration gives in each
/// cloud. "microsoftonline.com" is in every public tenant's metadata; the
/// sovereign values are unverified (Entra's instance host names).
pub fn cloud_instance_names(cloud: &str) -> &'static [&'static str] {
    match cloud {
        "public" => &["microsoftonline.com"],
        "usgov" | "usgov-dod" => &["microsoftonline.us"],
        "china" => &["partner.microsoftonline.cn", "chinacloudapi.cn"],
        _ => &[],
    }
}

impl Cloud {
    /// Every configured URL and resource identifier, by its key.
    pub fn endpoints(&self) -> [(&'static str, &str); 7] {
        [
            ("authority_host", &self.authority_host),
            ("exchange_url", &self.exchange_url),
            ("arm_url", &self.arm_url),
            ("graph_url", &self.graph_url),
            ("exchange_resource", &self.exchange_resource),
            ("arm_resource", &self.arm_resource),
            ("graph_resource", &self.graph_resource),
        ]
    }
}
