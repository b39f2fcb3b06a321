//! Safety decisions, as pure functions of the effective policy. Doubt never
//! ends in a wipe: every "no" carries the reason shown on the incident.

use crate::config::PolicySettings;
use crate::domain::{Claims, ClientType, EasVersion, MailboxIdentity, Severity, Upn};
use crate::exchange::MobileDevice;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetDecision {
    Proceed,
    Refused(String),
    Protected(String),
}

/// May this user be contained automatically at all?
pub fn target(p: &PolicySettings, upn: &Upn) -> TargetDecision {
    if let Some(pattern) = p.protected_upns.iter().find(|pat| glob(pat, upn.as_str())) {
        return TargetDecision::Protected(format!(
            "protected account (matches policy.protected_upns '{pattern}'); never wiped automatically"
        ));
    }
    if p.allowed_domains.is_empty() {
        return TargetDecision::Refused(
            "policy.allowed_domains is empty: no domain is allowed".into(),
        );
    }
    if !p
        .allowed_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(upn.domain()))
    {
        return TargetDecision::Refused(format!(
            "domain '{}' is not in policy.allowed_domains",
            upn.domain()
        ));
    }
    TargetDecision::Proceed
}

/// May this mailbox be contained automatically? Judged on the mailbox, not on
/// the address an entity named: `Get-MobileDevice -Mailbox` accepts any of
/// a mailbox's addresses, so the protected list is applied to its UPN and to
/// every address it has, and the allowed domains to its UPN.
pub fn mailbox(p: &PolicySettings, named: &Upn, m: &MailboxIdentity) -> TargetDecision {
    let via = if m.upn == *named {
        String::new()
    } else {
        format!("'{named}' is an address of the mailbox {}: ", m.upn)
    };
    let all = std::iter::once(m.upn.as_str()).chain(m.addresses.iter().map(String::as_str));
    for address in all {
        if let Some(pattern) = p.protected_upns.iter().find(|pat| glob(pat, address)) {
            let which = if address == m.upn.as_str() {
                String::new()
            } else {
                format!(" through its address {address}")
            };
            return TargetDecision::Protected(format!(
                "{via}protected account{which} (matches policy.protected_upns '{pattern}'); never wiped automatically"
            ));
        }
    }
    match target(p, &m.upn) {
        TargetDecision::Refused(r) => TargetDecision::Refused(format!("{via}{r}")),
        other => other,
    }
}

/// Does the mailbox agree with everything else the entity says about the
/// person? A disagreement means the address may name someone else: refused.
pub fn claims_agree(named: &Upn, claims: &Claims, m: &MailboxIdentity) -> Result<(), String> {
    for id in &claims.object_ids {
        match &m.object_id {
            Some(actual) if actual.eq_ignore_ascii_case(id) => {}
            Some(actual) => {
                return Err(format!(
                    "the entity's object id {id} is a different person than the mailbox {} (object id {actual}) that '{named}' resolves to; refused",
                    m.upn
                ));
            }
            None => {
                return Err(format!(
                    "the entity names object id {id}, but Exchange reports no object id for the mailbox {}; cannot confirm it is the same person, refused",
                    m.upn
                ));
            }
        }
    }
    for a in &claims.addresses {
        if !m.answers_to(a.as_str()) {
            return Err(format!(
                "the entity also names '{a}', which is not an address of the mailbox {} that '{named}' resolves to; refused",
                m.upn
            ));
        }
    }
    Ok(())
}

/// Case-insensitive match with `*` standing for any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.trim().to_lowercase().chars().collect();
    let s: Vec<char> = s.to_lowercase().chars().collect();
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Does the incident's severity allow an automatic run?
pub fn severity(p: &PolicySettings, sev: Option<Severity>) -> Result<(), String> {
    match (p.min_severity, sev) {
        (None, _) => Ok(()),
        (Some(min), Some(s)) if s >= min => Ok(()),
        (Some(min), Some(s)) => Err(format!(
            "incident severity {} is below policy.min_severity {}",
            s.as_str(),
            min.as_str()
        )),
        (Some(min), None) => Err(format!(
            "incident severity is unknown and policy.min_severity is {}",
            min.as_str()
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceDecision {
    Wipe { notes: Vec<String> },
    Skip { reason: String, notes: Vec<String> },
}

/// Wipe this device account-only, or not (and why).
pub fn device(p: &PolicySettings, d: &MobileDevice) -> DeviceDecision {
    let mut notes = vec![];
    let allowed = |name: &str| p.client_types.iter().any(|c| c.eq_ignore_ascii_case(name));
    match &d.client_type {
        ClientType::Outlook | ClientType::Rest => {
            notes.push("Outlook for iOS/Android: one wipe removes Outlook data from all of the user's devices running Outlook".to_string());
            if !allowed(d.client_type.as_str()) {
                return DeviceDecision::Skip {
                    reason: format!(
                        "client type {} is not in policy.client_types",
                        d.client_type.as_str()
                    ),
                    notes,
                };
            }
        }
        ClientType::Eas => {
            if !allowed("EAS") {
                return DeviceDecision::Skip {
                    reason: "client type EAS is not in policy.client_types".into(),
                    notes,
                };
            }
            if looks_native_android(d) {
                notes.push("native Android EAS mail clients are known not to honour account-only wipes: verify and consider other containment".into());
            }
            match d.eas_version {
                None => {
                    return DeviceDecision::Skip {
                        reason: "EAS protocol version unknown; account-only wipe needs EAS 16.1 or later (no full-device wipe is ever sent)".into(),
                        notes,
                    };
                }
                Some(v) if v < EasVersion::ACCOUNT_ONLY_MIN => {
                    return DeviceDecision::Skip {
                        reason: format!(
                            "EAS {v} does not support account-only wipe (needs 16.1); no full-device wipe is ever sent"
                        ),
                        notes,
                    };
                }
                Some(_) => {}
            }
        }
        ClientType::Other(t) => {
            return DeviceDecision::Skip {
                reason: format!("unknown client type '{t}': not wiped"),
                notes,
            };
        }
    }
    DeviceDecision::Wipe { notes }
}

fn looks_native_android(d: &MobileDevice) -> bool {
    let s = format!("{} {} {}", d.device_type, d.user_agent, d.os).to_ascii_lowercase();
    s.contains("android") || s.contains("samsung") || s.contains("sm-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceGuid;

    fn p() -> PolicySettings {
        PolicySettings {
            allowed_domains: vec!["contoso.com".into()],
            protected_upns: vec![
                "breakglass@contoso.com".into(),
                "*-admin@contoso.com".into(),
            ],
            ..Default::default()
        }
    }

    fn dev(ct: &str, v: &str, ty: &str) -> MobileDevice {
        MobileDevice {
            guid: DeviceGuid::parse("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a").unwrap(),
            identity: "x\\ExchangeActiveSyncDevices\\y".into(),
            device_id: "d".into(),
            device_type: ty.into(),
            model: "m".into(),
            os: "o".into(),
            user_agent: "".into(),
            client_type: ClientType::parse(ct),
            client_version: v.into(),
            eas_version: EasVersion::parse(v),
        }
    }

    #[test]
    fn targets() {
        let u = |s| Upn::parse(s).unwrap();
        assert_eq!(
            target(&p(), &u("jdoe@contoso.com")),
            TargetDecision::Proceed
        );
        assert!(matches!(
            target(&p(), &u("BreakGlass@contoso.com")),
            TargetDecision::Protected(_)
        ));
        assert!(matches!(
            target(&p(), &u("ops-admin@contoso.com")),
            TargetDecision::Protected(_)
        ));
        assert!(matches!(
            target(&p(), &u("jdoe@fabrikam.com")),
            TargetDecision::Refused(_)
        ));
        assert!(matches!(
            target(&p(), &u("jdoe@evil.contoso.com")),
            TargetDecision::Refused(_)
        ));
        assert!(matches!(
            target(&PolicySettings::default(), &u("jdoe@contoso.com")),
            TargetDecision::Refused(_)
        ));
    }

    fn mbx(upn: &str, addresses: &[&str], oid: Option<&str>) -> MailboxIdentity {
        MailboxIdentity {
            upn: Upn::parse(upn).unwrap(),
            display_name: "X".into(),
            object_id: oid.map(String::from),
            primary_smtp: addresses.first().map(|a| a.to_string()),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            recipient_type: "UserMailbox".into(),
        }
    }

    #[test]
    fn mailboxes_are_judged_on_every_address() {
        let u = |s| Upn::parse(s).unwrap();
        let bg = mbx("breakglass@contoso.com", &["bg.ops@contoso.com"], None);
        assert!(matches!(
            mailbox(&p(), &u("bg.ops@contoso.com"), &bg),
            TargetDecision::Protected(r) if r.contains("breakglass@contoso.com")
        ));
        let svc = mbx("svc-admin@contoso.com", &["svcadm@contoso.com"], None);
        assert!(matches!(
            mailbox(&p(), &u("svcadm@contoso.com"), &svc),
            TargetDecision::Protected(_)
        ));
        let partner = mbx(
            "mallory@fabrikam-partner.com",
            &["mallory@contoso.com"],
            None,
        );
        assert!(matches!(
            mailbox(&p(), &u("mallory@contoso.com"), &partner),
            TargetDecision::Refused(r) if r.contains("fabrikam-partner.com")
        ));
        // A protected proxy address protects the whole mailbox.
        let shadow = mbx("jdoe@contoso.com", &["breakglass@contoso.com"], None);
        assert!(matches!(
            mailbox(&p(), &u("jdoe@contoso.com"), &shadow),
            TargetDecision::Protected(_)
        ));
        let ok = mbx("jdoe@contoso.com", &["john.doe@contoso.com"], None);
        assert_eq!(
            mailbox(&p(), &u("john.doe@contoso.com"), &ok),
            TargetDecision::Proceed
        );
    }

    #[test]
    fn claims_must_agree_with_the_mailbox() {
        let u = |s| Upn::parse(s).unwrap();
        let w = "11111111-0000-4000-8000-000000000001";
        let a = "22222222-0000-4000-8000-000000000002";
        let alex = mbx("alex@contoso.com", &["alex@contoso.com"], Some(a));
        let claims = Claims {
            object_ids: vec![w.into()],
            ..Default::default()
        };
        assert!(claims_agree(&u("alex@contoso.com"), &claims, &alex).is_err());
        let wilber = mbx("alex.wilber@contoso.com", &[], Some(w));
        assert!(claims_agree(&u("alex.wilber@contoso.com"), &claims, &wilber).is_ok());
        let no_oid = mbx("alex.wilber@contoso.com", &[], None);
        assert!(claims_agree(&u("alex.wilber@contoso.com"), &claims, &no_oid).is_err());
        let other_addr = Claims {
            addresses: vec![u("boss@contoso.com")],
            ..Default::default()
        };
        assert!(claims_agree(&u("alex@contoso.com"), &other_addr, &alex).is_err());
    }

    #[test]
    fn devices() {
        assert!(matches!(
            device(&p(), &dev("EAS", "16.1", "iPhone")),
            DeviceDecision::Wipe { .. }
        ));
        assert!(matches!(
            device(&p(), &dev("EAS", "14.1", "iPhone")),
            DeviceDecision::Skip { .. }
        ));
        assert!(matches!(
            device(&p(), &dev("EAS", "", "iPhone")),
            DeviceDecision::Skip { .. }
        ));
        assert!(matches!(
            device(&p(), &dev("MOWA", "1", "x")),
            DeviceDecision::Skip { .. }
        ));
        let DeviceDecision::Wipe { notes } = device(&p(), &dev("EAS", "16.1", "Android")) else {
            panic!()
        };
        assert!(notes[0].contains("Android"));
        let mut only_outlook = p();
        only_outlook.client_types = vec!["Outlook".into()];
        assert!(matches!(
            device(&only_outlook, &dev("EAS", "16.1", "iPhone")),
            DeviceDecision::Skip { .. }
        ));
        assert!(matches!(
            device(&only_outlook, &dev("Outlook", "", "Outlook")),
            DeviceDecision::Wipe { .. }
        ));
    }

    #[test]
    fn severities() {
        let mut pol = p();
        assert!(severity(&pol, None).is_ok());
        pol.min_severity = Some(Severity::Medium);
        assert!(severity(&pol, Some(Severity::High)).is_ok());
        assert!(severity(&pol, Some(Severity::Low)).is_err());
        assert!(severity(&pol, None).is_err());
    }
}
