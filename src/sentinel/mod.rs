//! Everything that knows Sentinel's JSON: the playbook trigger bodies, the
//! entity shapes (camelCase ARM and PascalCase connector forms), the incident
//! entities and comments REST API, and the HTML of the comment. Past this
//! module, code holds `Trigger`, `Candidate`, `Upn` and `IncidentRef`.

pub mod arm;
pub mod comment;

use serde_json::{Map, Value};

pub use crate::domain::TriggerKind;
use crate::domain::{Claims, IncidentRef, Severity, Upn, visible};

/// A trigger body, parsed.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub incident: Option<IncidentRef>,
    pub incident_number: Option<i64>,
    pub title: Option<String>,
    pub severity: Option<Severity>,
    pub event_unique_id: Option<String>,
    pub candidates: Vec<Candidate>,
    /// The incident's tags (`labels[].labelName`).
    pub labels: Vec<String>,
    /// The incident's alerts in the body (`alerts[].properties.systemAlertId`).
    pub alert_ids: Vec<String>,
    /// `createdTimeUtc`, Unix ms.
    pub created_at: Option<i64>,
    /// The incident's number in the Defender portal (`providerIncidentId`),
    /// which is also its id in Microsoft Graph security.
    pub provider_incident_id: Option<String>,
    /// `additionalData.commentsCount`: comments the incident had.
    pub comments_count: Option<i64>,
    /// `firstActivityTimeUtc`, Unix ms: the earliest activity of its alerts.
    pub first_activity_at: Option<i64>,
}

impl Trigger {
    /// Defender's automatic attack disruption acted on the incident: the
    /// *Attack Disruption* tag, or "(attack disruption)" at the end of the
    /// title (as the API shows it).
    pub fn attack_disruption(&self) -> bool {
        self.labels
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case("attack disruption"))
            || self.title.as_deref().is_some_and(|t| {
                t.trim_end()
                    .to_ascii_lowercase()
                    .ends_with("(attack disruption)")
            })
    }
}

/// One alert of an incident, as the incident's alert list gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertInfo {
    pub system_alert_id: String,
    pub name: String,
    pub product: String,
}

/// What an entity yields: an address to resolve to a mailbox, an Entra
/// object id to resolve through Graph, or a reason why it yields nothing.
/// `claims` are what else the entity says about the same person; they are
/// checked against the mailbox before any decision (a disagreement refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidate {
    Upn {
        upn: Upn,
        source: String,
        claims: Claims,
    },
    AadUser {
        object_id: String,
        source: String,
        claims: Claims,
    },
    Unresolved {
        entity: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "the body is not a Sentinel incident-trigger or entity-trigger body (expected 'object' with an incident id, or 'Entity' with 'IncidentArmID')"
    )]
    UnknownShape,
    #[error(
        "the body is an alert-trigger body; alert playbooks carry no incident id. Use the incident trigger (automation rule) or the entity trigger"
    )]
    AlertTrigger,
    #[error("the incident trigger body has no incident ARM id at object.id")]
    NoIncidentId,
    #[error("invalid incident ARM id: {0}")]
    BadIncidentId(String),
}

/// Case-insensitive member lookup (Logic Apps and connectors mix camelCase and PascalCase).
fn get<'a>(o: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    for n in names {
        if let Some(v) = o.get(*n) {
            return Some(v);
        }
    }
    o.iter()
        .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .map(|(_, v)| v)
}

fn get_str<'a>(o: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    get(o, names)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Recognise and parse a trigger body.
pub fn parse_trigger(body: &Value) -> Result<Trigger, TriggerError> {
    let Some(root) = body.as_object() else {
        return Err(TriggerError::UnknownShape);
    };
    if let Some(entity) = get(root, &["Entity"]).and_then(Value::as_object) {
        let incident = match get(root, &["IncidentArmID", "incidentArmId"]) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                Some(IncidentRef::parse(s).map_err(TriggerError::BadIncidentId)?)
            }
            // Absent, null or empty: an entity run without an incident.
            None | Some(Value::Null) | Some(Value::String(_)) => None,
            // Any other type is refused like a malformed id: a run that
            // could not write its record must not start.
            Some(other) => {
                return Err(TriggerError::BadIncidentId(format!(
                    "IncidentArmID must be a string, got {}",
                    json_kind(other)
                )));
            }
        };
        let mut candidates = vec![];
        push_entity(&mut candidates, entity, Some("account"));
        return Ok(Trigger {
            kind: TriggerKind::Entity,
            incident,
            incident_number: None,
            title: None,
            severity: None,
            event_unique_id: None,
            candidates: dedup(candidates),
            labels: vec![],
            alert_ids: vec![],
            created_at: None,
            provider_incident_id: None,
            comments_count: None,
            first_activity_at: None,
        });
    }
    if let Some(object) = get(root, &["object"]).and_then(Value::as_object) {
        let id = get_str(object, &["id"]).ok_or(TriggerError::NoIncidentId)?;
        let incident = IncidentRef::parse(id).map_err(TriggerError::BadIncidentId)?;
        let props = get(object, &["properties"]).and_then(Value::as_object);
        let empty = Map::new();
        let props = props.unwrap_or(&empty);
        let entities = get(props, &["relatedEntities"])
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        return Ok(Trigger {
            kind: TriggerKind::Incident,
            incident: Some(incident),
            incident_number: get(props, &["incidentNumber"])
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok())),
            title: get_str(props, &["title"]).map(|s| s.chars().take(300).collect()),
            severity: get_str(props, &["severity"]).and_then(Severity::parse),
            event_unique_id: get_str(root, &["eventUniqueId"]).map(String::from),
            candidates: candidates_from_entities(entities),
            labels: get(props, &["labels"])
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_object().and_then(|l| get_str(l, &["labelName"])))
                        .map(|l| l.chars().take(256).collect())
                        .collect()
                })
                .unwrap_or_default(),
            alert_ids: get(props, &["alerts"])
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(alert_info)
                        .map(|a| a.system_alert_id)
                        .collect()
                })
                .unwrap_or_default(),
            created_at: get_str(props, &["createdTimeUtc"]).and_then(parse_time),
            first_activity_at: get_str(props, &["firstActivityTimeUtc"]).and_then(parse_time),
            provider_incident_id: get(props, &["providerIncidentId"])
                .and_then(|v| match v {
                    Value::String(s) => Some(s.trim().to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 100
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }),
            comments_count: get(props, &["additionalData"])
                .and_then(Value::as_object)
                .and_then(|a| get(a, &["commentsCount"]))
                .and_then(Value::as_i64),
        });
    }
    if get(root, &["SystemAlertId"]).is_some() {
        return Err(TriggerError::AlertTrigger);
    }
    Err(TriggerError::UnknownShape)
}

/// An alert (`SecurityAlert` entity, ARM shape) as `AlertInfo`.
pub fn alert_info(v: &Value) -> Option<AlertInfo> {
    let o = v.as_object()?;
    let p = get(o, &["properties"])
        .and_then(Value::as_object)
        .unwrap_or(o);
    let id = get_str(p, &["systemAlertId", "SystemAlertId"])
        .or_else(|| get_str(o, &["name"]))?
        .chars()
        .take(100)
        .collect();
    let text = |names: &[&str]| -> String {
        visible(get_str(p, names).unwrap_or(""))
            .chars()
            .take(200)
            .collect()
    };
    Some(AlertInfo {
        system_alert_id: id,
        name: text(&["alertDisplayName", "AlertDisplayName", "friendlyName"]),
        product: text(&["productName", "ProductName"]),
    })
}

fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Targets from a list of entities in ARM (`kind` + `properties`) or
/// connector (`Type`, flat PascalCase) shape. Other kinds are ignored.
pub fn candidates_from_entities(entities: &[Value]) -> Vec<Candidate> {
    let mut out = vec![];
    for e in entities {
        if let Some(o) = e.as_object() {
            push_entity(&mut out, o, None);
        }
    }
    dedup(out)
}

fn push_entity(out: &mut Vec<Candidate>, e: &Map<String, Value>, default_kind: Option<&str>) {
    let kind = get_str(e, &["kind", "Type"])
        .map(str::to_ascii_lowercase)
        .or(default_kind.map(String::from));
    let props = get(e, &["properties"])
        .and_then(Value::as_object)
        .unwrap_or(e);
    match kind.as_deref() {
        Some("account") => out.push(account(props)),
        Some("mailbox") => out.push(mailbox(props)),
        _ => {}
    }
}

fn describe(props: &Map<String, Value>) -> String {
    let field = |names: &[&str]| get_str(props, names).unwrap_or("");
    let mut d = format!(
        "Account name='{}' upnSuffix='{}'",
        field(&["accountName", "Name"]),
        field(&["upnSuffix", "UPNSuffix"])
    );
    for (label, names) in [
        (
            "userPrincipalName",
            &["userPrincipalName", "UserPrincipalName"][..],
        ),
        ("aadUserId", &["aadUserId", "AadUserId"][..]),
        ("ntDomain", &["ntDomain", "NTDomain"][..]),
        (
            "friendlyName",
            &["friendlyName", "FriendlyName", "displayName", "DisplayName"][..],
        ),
    ] {
        let v = field(names);
        if !v.is_empty() {
            d.push_str(&format!(" {label}='{v}'"));
        }
    }
    visible(&d).chars().take(300).collect()
}

/// The Account entity, as Sentinel fills it since 1 July 2026: `accountName`
/// is the UPN prefix, falling back to the name and then to the *display
/// name*; the full UPN has its own field. Resolution order: the UPN field;
/// `aadUserId` through Graph; `accountName@upnSuffix` only as the last resort,
/// and never when the name looks like a display name. A prefix alone can be a
/// different, real person (`alex` + `contoso.com` vs `alex.wilber@contoso.com`).
fn account(p: &Map<String, Value>) -> Candidate {
    let name = get_str(p, &["accountName", "Name"]);
    let suffix = get_str(p, &["upnSuffix", "UPNSuffix"]);
    let upn_field = get_str(p, &["userPrincipalName", "UserPrincipalName"]);
    let unresolved = |reason: String| Candidate::Unresolved {
        entity: describe(p),
        reason,
    };
    let object_id = match get_str(p, &["aadUserId", "AadUserId"]) {
        None => None,
        Some(id) => match uuid::Uuid::parse_str(id) {
            Ok(u) => Some(u.hyphenated().to_string()),
            Err(_) => {
                return unresolved(format!(
                    "the Account entity's aadUserId '{}' is not an object id",
                    visible(id)
                ));
            }
        },
    };
    let built = match (name, suffix) {
        (Some(n), Some(s)) => Some(
            visible(&format!("{n}@{s}"))
                .chars()
                .take(320)
                .collect::<String>(),
        ),
        _ => None,
    };
    if let Some(u) = upn_field {
        let upn = match Upn::parse(u) {
            Ok(upn) => upn,
            Err(e) => return unresolved(format!("the Account entity's userPrincipalName: {e}")),
        };
        let mut claims = Claims {
            object_ids: object_id.into_iter().collect(),
            ..Default::default()
        };
        if let Some(b) = built.filter(|b| !b.eq_ignore_ascii_case(upn.as_str())) {
            claims.notes.push(format!(
                "accountName@upnSuffix ('{b}') not used: the userPrincipalName field decides"
            ));
        }
        return Candidate::Upn {
            upn,
            source: "Account entity (userPrincipalName)".into(),
            claims,
        };
    }
    if let Some(object_id) = object_id {
        let mut claims = Claims::default();
        if let Some(b) = built {
            claims.notes.push(format!(
                "accountName@upnSuffix ('{b}') not used: the object id decides (a name prefix can belong to someone else)"
            ));
        }
        return Candidate::AadUser {
            object_id,
            source: "Account entity (aadUserId via Microsoft Graph)".into(),
            claims,
        };
    }
    match (name, suffix) {
        (Some(n), Some(_)) if n.chars().any(char::is_whitespace) => unresolved(format!(
            "the Account name '{n}' looks like a display name (Sentinel falls back to it when no UPN is known); no address is built from it"
        )),
        (Some(n), Some(s)) => match Upn::parse(&format!("{n}@{s}")) {
            Ok(upn) => Candidate::Upn {
                upn,
                source: "Account entity (accountName@upnSuffix; no userPrincipalName or aadUserId)"
                    .into(),
                claims: Claims::default(),
            },
            Err(e) => unresolved(e),
        },
        (Some(_), None) => unresolved(
            "the Account entity has an empty UPN suffix and no userPrincipalName or aadUserId; the domain is never guessed (map UPNSuffix in the analytics rule)".into(),
        ),
        _ => unresolved(
            "the Account entity has no userPrincipalName, aadUserId or accountName@upnSuffix".into(),
        ),
    }
}

/// The Mailbox entity: its `upn`, else its `mailboxPrimaryAddress` (the
/// entity's strong identifier); the other address and the
/// `externalDirectoryObjectId` must belong to the same mailbox.
fn mailbox(p: &Map<String, Value>) -> Candidate {
    let addr = get_str(p, &["mailboxPrimaryAddress", "MailboxPrimaryAddress"]);
    let upn_field = get_str(p, &["upn", "Upn"]);
    let entity = format!(
        "Mailbox '{}'",
        addr.or(upn_field)
            .or(get_str(p, &["displayName", "DisplayName"]))
            .map(visible)
            .unwrap_or_default()
    );
    let unresolved = |reason: String| Candidate::Unresolved {
        entity: entity.clone(),
        reason,
    };
    let mut parsed = vec![];
    for (field, v) in [("upn", upn_field), ("mailboxPrimaryAddress", addr)] {
        if let Some(v) = v {
            match Upn::parse(v) {
                Ok(u) => parsed.push((field, u)),
                // Present but unusable: never fall back to the other field.
                Err(e) => return unresolved(format!("the Mailbox entity's {field}: {e}")),
            }
        }
    }
    let mut claims = Claims::default();
    if let Some(id) = get_str(
        p,
        &["externalDirectoryObjectId", "ExternalDirectoryObjectId"],
    ) {
        match uuid::Uuid::parse_str(id) {
            Ok(u) => claims.object_ids.push(u.hyphenated().to_string()),
            Err(_) => {
                return unresolved(format!(
                    "the Mailbox entity's externalDirectoryObjectId '{}' is not an object id",
                    visible(id)
                ));
            }
        }
    }
    let mut it = parsed.into_iter();
    let Some((field, upn)) = it.next() else {
        return unresolved("the Mailbox entity has no upn or mailboxPrimaryAddress".into());
    };
    for (_, other) in it {
        if other != upn {
            claims.addresses.push(other);
        }
    }
    Candidate::Upn {
        upn,
        source: format!("Mailbox entity ({field})"),
        claims,
    }
}

fn dedup(v: Vec<Candidate>) -> Vec<Candidate> {
    // Linear: a 4 MiB body can hold tens of thousands of entities. Two
    // entities naming the same address keep both sets of claims.
    let mut index = std::collections::HashMap::new();
    let mut out: Vec<Candidate> = Vec::with_capacity(v.len());
    for c in v {
        let key = match &c {
            Candidate::Upn { upn, .. } => format!("u:{upn}"),
            Candidate::AadUser { object_id, .. } => format!("a:{object_id}"),
            Candidate::Unresolved { entity, .. } => format!("e:{entity}"),
        };
        match index.get(&key) {
            Some(&i) => {
                let incoming = match &c {
                    Candidate::Upn { claims, .. } | Candidate::AadUser { claims, .. } => {
                        Some(claims.clone())
                    }
                    Candidate::Unresolved { .. } => None,
                };
                if let (
                    Some(inc),
                    Candidate::Upn { claims, .. } | Candidate::AadUser { claims, .. },
                ) = (incoming, &mut out[i])
                {
                    claims.merge(&inc);
                }
            }
            None => {
                index.insert(key, out.len());
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INC: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/i1";

    #[test]
    fn incident_body_with_camel_and_pascal_entities() {
        let body = json!({
            "eventUniqueId": "e1", "objectSchemaType": "Incident",
            "object": {"id": INC, "properties": {"severity": "High", "incidentNumber": 42, "title": "Phish",
              "relatedEntities": [
                {"kind": "Account", "properties": {"accountName": "JDoe", "upnSuffix": "Contoso.com"}},
                {"Type": "account", "Name": "jdoe", "UPNSuffix": "contoso.com"},
                {"kind": "Account", "properties": {"accountName": "nosuffix", "upnSuffix": "", "ntDomain": "CONTOSO"}},
                {"kind": "Account", "properties": {"aadUserId": "5E8A6AD4-0000-4000-8000-000000000001", "friendlyName": "x"}},
                {"kind": "Mailbox", "properties": {"mailboxPrimaryAddress": "Boss@contoso.com"}},
                {"kind": "Host", "properties": {"hostName": "pc1"}}
              ]}}
        });
        let t = parse_trigger(&body).unwrap();
        assert_eq!(t.kind, TriggerKind::Incident);
        assert_eq!(t.incident_number, Some(42));
        assert_eq!(t.severity, Some(Severity::High));
        assert_eq!(t.event_unique_id.as_deref(), Some("e1"));
        let upns: Vec<_> = t
            .candidates
            .iter()
            .filter_map(|c| {
                if let Candidate::Upn { upn, .. } = c {
                    Some(upn.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(upns, vec!["jdoe@contoso.com", "boss@contoso.com"]);
        assert!(t.candidates.iter().any(|c| matches!(c, Candidate::AadUser { object_id, .. } if object_id == "5e8a6ad4-0000-4000-8000-000000000001")));
        assert!(t.candidates.iter().any(|c| matches!(c, Candidate::Unresolved { reason, .. } if reason.contains("empty UPN suffix"))));
    }

    /// The Account entity as Sentinel fills it since 1 July 2026, both casings.
    #[test]
    fn july_2026_account_entities() {
        let w = "A1E00000-0000-4000-8000-00000000A11E";
        let one = |e: Value| candidates_from_entities(&[e]).remove(0);
        // The UPN field decides; an object id beside it must be confirmed.
        for e in [
            json!({"kind": "Account", "properties": {"accountName": "alex", "upnSuffix": "contoso.com", "userPrincipalName": "Alex.Wilber@contoso.com", "aadUserId": w}}),
            json!({"Type": "account", "Name": "alex", "UPNSuffix": "contoso.com", "UserPrincipalName": "alex.wilber@contoso.com", "AadUserId": w}),
        ] {
            let Candidate::Upn {
                upn,
                source,
                claims,
            } = one(e)
            else {
                panic!()
            };
            assert_eq!(upn.as_str(), "alex.wilber@contoso.com");
            assert!(source.contains("userPrincipalName"));
            assert_eq!(claims.object_ids, vec![w.to_ascii_lowercase()]);
            assert!(claims.notes[0].contains("alex@contoso.com"));
        }
        // No UPN field: the object id decides, never the prefix.
        for e in [
            json!({"kind": "Account", "properties": {"accountName": "alex", "upnSuffix": "contoso.com", "aadUserId": w}}),
            json!({"Type": "account", "Name": "alex", "UPNSuffix": "contoso.com", "AadUserId": w}),
        ] {
            let Candidate::AadUser {
                object_id, claims, ..
            } = one(e)
            else {
                panic!()
            };
            assert_eq!(object_id, w.to_ascii_lowercase());
            assert!(claims.notes[0].contains("not used"));
        }
        // The name fell back to the display name: nothing is built from it.
        let c = one(
            json!({"kind": "Account", "properties": {"accountName": "Alex Wilber", "upnSuffix": "contoso.com"}}),
        );
        assert!(
            matches!(c, Candidate::Unresolved { reason, .. } if reason.contains("display name"))
        );
        // Only name + suffix: the last resort, said so.
        let Candidate::Upn { source, .. } =
            one(json!({"Type": "account", "Name": "jdoe", "UPNSuffix": "contoso.com"}))
        else {
            panic!()
        };
        assert!(source.contains("no userPrincipalName or aadUserId"));
        // A present but unusable field refuses the entity.
        let c = one(
            json!({"kind": "Account", "properties": {"accountName": "a", "upnSuffix": "contoso.com", "aadUserId": "not-a-guid"}}),
        );
        assert!(matches!(c, Candidate::Unresolved { .. }));
        let c = one(
            json!({"kind": "Account", "properties": {"userPrincipalName": "a\u{200B}b@contoso.com"}}),
        );
        assert!(matches!(c, Candidate::Unresolved { reason, .. } if reason.contains("invisible")));
        // Mailbox: upn first; the primary address and the object id are claims.
        let Candidate::Upn { upn, claims, .. } = one(
            json!({"kind": "Mailbox", "properties": {"upn": "carol@contoso.com", "mailboxPrimaryAddress": "Carol.Smith@contoso.com", "externalDirectoryObjectId": w}}),
        ) else {
            panic!()
        };
        assert_eq!(upn.as_str(), "carol@contoso.com");
        assert_eq!(claims.addresses[0].as_str(), "carol.smith@contoso.com");
        assert_eq!(claims.object_ids.len(), 1);
        // Two entities naming one address keep both claims.
        let both = candidates_from_entities(&[
            json!({"kind": "Account", "properties": {"userPrincipalName": "x@contoso.com", "aadUserId": w}}),
            json!({"kind": "Mailbox", "properties": {"upn": "x@contoso.com", "mailboxPrimaryAddress": "y@contoso.com"}}),
        ]);
        let [Candidate::Upn { claims, .. }] = &both[..] else {
            panic!("{both:?}")
        };
        assert_eq!((claims.object_ids.len(), claims.addresses.len()), (1, 1));
    }

    #[test]
    fn entity_body() {
        let t = parse_trigger(&json!({"Entity": {"properties": {"Name": "jdoe", "UPNSuffix": "contoso.com"}}, "IncidentArmID": INC})).unwrap();
        assert_eq!(t.kind, TriggerKind::Entity);
        assert!(t.incident.is_some());
        let t = parse_trigger(&json!({"Entity": {"properties": {"Name": "jdoe", "UPNSuffix": "contoso.com"}}, "IncidentArmID": null})).unwrap();
        assert!(t.incident.is_none());
        assert_eq!(t.candidates.len(), 1);
    }

    #[test]
    fn rejections() {
        assert_eq!(
            parse_trigger(&json!([1])).unwrap_err(),
            TriggerError::UnknownShape
        );
        assert_eq!(
            parse_trigger(&json!({"hello": 1})).unwrap_err(),
            TriggerError::UnknownShape
        );
        assert_eq!(
            parse_trigger(&json!({"SystemAlertId": "a"})).unwrap_err(),
            TriggerError::AlertTrigger
        );
        assert_eq!(
            parse_trigger(&json!({"object": {"properties": {}}})).unwrap_err(),
            TriggerError::NoIncidentId
        );
        assert!(matches!(
            parse_trigger(&json!({"object": {"id": "/subscriptions/x"}})).unwrap_err(),
            TriggerError::BadIncidentId(_)
        ));
    }

    #[test]
    fn real_fixtures_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/sentinel");
        let Ok(text) = std::fs::read_to_string(format!(
            "{dir}/entities-relatedEntities-mde-linux-eicar-workshop.json"
        )) else {
            return;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        let arr = v.as_array().cloned().unwrap_or_default();
        // Host, File, FileHash: no account, no target, no panic.
        assert!(candidates_from_entities(&arr).is_empty());
        let Ok(text) = std::fs::read_to_string(format!(
            "{dir}/rest-incident-entities-list-stable-2025-09-01-example.json"
        )) else {
            return;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        let c = arm::parse_entities_response(&v["responses"]["200"]["body"]).unwrap();
        assert!(
            matches!(&c[..], [Candidate::Unresolved { reason, .. }] if reason.contains("empty UPN suffix"))
        );
    }
}
