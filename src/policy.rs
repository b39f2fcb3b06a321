//! Safety decisions, as pure functions of the effective policy. Doubt never
//! ends in a wipe: every "no" carries the reason shown on the incident.

use crate::config::{FoundLater, PolicySettings};
use crate::domain::{
    Claims, ClientType, DeviceClass, DirectoryUser, EasVersion, Found, MobileDevice, NewTarget,
    Severity, SkipCause, TargetState, Upn,
};

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

/// Decide the state of new targets: policy refusals, then (with
/// `blast_radius`, at intake) the hold when there are too many. Targets found
/// after intake get their blast radius from the store, under the run's lock.
/// This judges the address as named; the contain job judges the person it
/// resolves to again before anything is sent.
pub fn plan_targets(p: &PolicySettings, found: &[Found], blast_radius: bool) -> Vec<NewTarget> {
    let mut planned: Vec<NewTarget> = found
        .iter()
        .map(|f| {
            let (state, reason) = match target(p, &f.upn) {
                TargetDecision::Proceed => (TargetState::Pending, None),
                TargetDecision::Refused(r) => (TargetState::Refused, Some(r)),
                TargetDecision::Protected(r) => (TargetState::Protected, Some(r)),
            };
            NewTarget {
                upn: f.upn.clone(),
                source: f.source.clone(),
                state,
                reason,
                claims: f.claims.clone(),
            }
        })
        .collect();
    let eligible = planned
        .iter()
        .filter(|t| t.state == TargetState::Pending)
        .count();
    if blast_radius && eligible > p.max_targets_per_run {
        for t in planned
            .iter_mut()
            .filter(|t| t.state == TargetState::Pending)
        {
            t.state = TargetState::Held;
            t.reason = Some(format!(
                "blast radius: {eligible} users exceed policy.max_targets_per_run = {}; approval required",
                p.max_targets_per_run
            ));
        }
    }
    planned
}

/// Users first seen after the trigger (in the incident's own entity list,
/// which correlation can widen with unrelated alerts) are held for approval
/// unless the tenant accepts them (`policy.users_found_later = "contain"`).
/// `why_later` names where they came from.
pub fn hold_found_later(p: &PolicySettings, t: &mut NewTarget, why_later: &str) {
    if p.users_found_later == FoundLater::Hold && t.state == TargetState::Pending {
        t.state = TargetState::Held;
        t.reason = Some(format!(
            "{why_later}; held for approval (policy.users_found_later = hold)"
        ));
    }
}

/// May this person be contained automatically? Judged on the person, not on
/// the address an entity named: `Get-MobileDevice -Mailbox` accepts any of
/// a mailbox's addresses, so the protected list is applied to the UPN and to
/// every address they have, and the allowed domains to the UPN.
pub fn person(p: &PolicySettings, named: &Upn, m: &DirectoryUser) -> TargetDecision {
    let via = if m.upn == *named {
        String::new()
    } else {
        format!("'{named}' is an address of {}: ", m.upn)
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

/// Does the person found agree with everything the entity says? The named
/// address must be theirs, every object id the entity gives must be theirs,
/// and so must every other address it gives. A disagreement means the
/// entity may name someone else (a UPN prefix such as `alex` can be a
/// different, real person than `alex.wilber`): refused.
pub fn claims_agree(named: &Upn, claims: &Claims, m: &DirectoryUser) -> Result<(), String> {
    for id in &claims.object_ids {
        if !m.object_id.eq_ignore_ascii_case(id) {
            return Err(format!(
                "the entity's object id {id} and the address '{named}' ({}, object id {}) are different people; refused",
                m.upn, m.object_id
            ));
        }
    }
    if !m.answers_to(named.as_str()) {
        return Err(format!(
            "'{named}' is not an address of {} (object id {}), the person found for this entity; they may be different people, refused",
            m.upn, m.object_id
        ));
    }
    for a in &claims.addresses {
        if !m.answers_to(a.as_str()) {
            return Err(format!(
                "the entity also names '{a}', which is not an address of {} whom '{named}' belongs to; refused",
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
    Wipe {
        notes: Vec<String>,
    },
    Skip {
        cause: SkipCause,
        reason: String,
        notes: Vec<String>,
    },
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
                    cause: SkipCause::ClientTypeExcluded,
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
                    cause: SkipCause::ClientTypeExcluded,
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
                        cause: SkipCause::UnknownEasVersion,
                        reason: "EAS protocol version unknown; account-only wipe needs EAS 16.1 or later (no full-device wipe is ever sent)".into(),
                        notes,
                    };
                }
                Some(v) if v < EasVersion::ACCOUNT_ONLY_MIN => {
                    return DeviceDecision::Skip {
                        cause: SkipCause::OldEas,
                        reason: format!(
                            "EAS {v} does not support account-only wipe (needs 16.1); no full-device wipe is ever sent. Since 1 March 2026 Exchange Online refuses EAS clients below 16.1, so this phone no longer syncs company mail and a wipe would never be delivered; mail already on it stays until the user removes the account or the device is wiped by other means"
                        ),
                        notes,
                    };
                }
                Some(_) => {}
            }
        }
        ClientType::Other(t) => {
            return DeviceDecision::Skip {
                cause: SkipCause::UnknownClient,
                reason: format!("unknown client type '{t}': not wiped"),
                notes,
            };
        }
    }
    DeviceDecision::Wipe { notes }
}

/// What a device is, and why, before anything is done to it. In order: an
/// EAS client below 16.1 (it cannot connect at all), a suspected attacker
/// device (first synced at or after the incident's first activity minus
/// `policy.attacker_device_margin`), a stale one (no sync for
/// `policy.stale_after`: its wipe will probably never land), an Outlook
/// partnership (one for all the user's Outlook devices), else normal.
pub fn triage(
    p: &PolicySettings,
    d: &MobileDevice,
    first_activity_ms: Option<i64>,
    now_ms: i64,
) -> (DeviceClass, String) {
    let when = |ms: i64| crate::report::rfc3339(ms);
    if d.client_type == ClientType::Eas {
        match d.eas_version {
            None => {
                return (
                    DeviceClass::EasBelow16_1,
                    "EAS version unknown: account-only wipe needs 16.1, and Exchange Online refuses clients below it since 1 March 2026".into(),
                );
            }
            Some(v) if v < EasVersion::ACCOUNT_ONLY_MIN => {
                return (
                    DeviceClass::EasBelow16_1,
                    "EAS below 16.1: Exchange Online refuses it since 1 March 2026, so it cannot connect at all".into(),
                );
            }
            Some(_) => {}
        }
    }
    let margin = p.attacker_device_margin.as_millis() as i64;
    if let (Some(first), Some(activity)) = (d.first_sync_ms, first_activity_ms)
        && first >= activity - margin
    {
        return (
            DeviceClass::SuspectedAttacker,
            format!(
                "first synced {} (the incident's first activity {}, minus {}): suspected attacker device; its wipe is requested and it is blocked at once",
                when(first),
                when(activity),
                crate::config::format_duration(p.attacker_device_margin)
            ),
        );
    }
    if let Some(last) = d.last_sync_ms
        && now_ms - last > p.stale_after.as_millis() as i64
    {
        return (
            DeviceClass::Stale,
            format!(
                "no sync since {} (policy.stale_after = {}): the wipe will probably never land",
                when(last),
                crate::config::format_duration(p.stale_after)
            ),
        );
    }
    if matches!(d.client_type, ClientType::Outlook | ClientType::Rest) {
        return (
            DeviceClass::OutlookRest,
            "Outlook for iOS/Android: one partnership covers all the user's Outlook devices".into(),
        );
    }
    let mut why = "an active device".to_string();
    if first_activity_ms.is_none() {
        why.push_str("; no incident first-activity time, so it could not be checked for an attacker's device");
    }
    (DeviceClass::Normal, why)
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
            first_sync_ms: None,
            last_sync_ms: None,
            class: None,
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

    fn mbx(upn: &str, addresses: &[&str], oid: Option<&str>) -> DirectoryUser {
        DirectoryUser {
            upn: Upn::parse(upn).unwrap(),
            display_name: "X".into(),
            object_id: oid.unwrap_or("00000000-0000-4000-8000-000000000000").into(),
            mail: addresses.first().map(|a| a.to_string()),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn people_are_judged_on_every_address() {
        let u = |s| Upn::parse(s).unwrap();
        let bg = mbx("breakglass@contoso.com", &["bg.ops@contoso.com"], None);
        assert!(matches!(
            person(&p(), &u("bg.ops@contoso.com"), &bg),
            TargetDecision::Protected(r) if r.contains("breakglass@contoso.com")
        ));
        let svc = mbx("svc-admin@contoso.com", &["svcadm@contoso.com"], None);
        assert!(matches!(
            person(&p(), &u("svcadm@contoso.com"), &svc),
            TargetDecision::Protected(_)
        ));
        let partner = mbx(
            "mallory@fabrikam-partner.com",
            &["mallory@contoso.com"],
            None,
        );
        assert!(matches!(
            person(&p(), &u("mallory@contoso.com"), &partner),
            TargetDecision::Refused(r) if r.contains("fabrikam-partner.com")
        ));
        // A protected proxy address protects the whole mailbox.
        let shadow = mbx("jdoe@contoso.com", &["breakglass@contoso.com"], None);
        assert!(matches!(
            person(&p(), &u("jdoe@contoso.com"), &shadow),
            TargetDecision::Protected(_)
        ));
        let ok = mbx("jdoe@contoso.com", &["john.doe@contoso.com"], None);
        assert_eq!(
            person(&p(), &u("john.doe@contoso.com"), &ok),
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
        // Found by the object id, but the entity's address is someone else's.
        assert!(claims_agree(&u("alex@contoso.com"), &claims, &wilber).is_err());
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
