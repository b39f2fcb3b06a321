//! Everything that knows Sentinel's JSON: the playbook trigger bodies, the
//! entity shapes (camelCase ARM and PascalCase connector forms), the incident
//! entities and comments REST API, and the HTML of the comment. Past this
//! module, code holds `Trigger`, `Candidate`, `Upn` and `IncidentRef`.

pub mod arm;
pub mod comment;

use serde_json::{Map, Value};

use crate::domain::{IncidentRef, Severity, Upn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// `@triggerBody()` of the "Microsoft Sentinel incident" trigger.
    Incident,
    /// `@triggerBody()` of the "Microsoft Sentinel entity" trigger (Account).
    Entity,
}

impl TriggerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TriggerKind::Incident => "incident",
            TriggerKind::Entity => "entity",
        }
    }
}

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
}

/// What an entity yields: a UPN, an Entra object id to resolve, or a reason
/// why it yields nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidate {
    Upn { upn: Upn, source: String },
    AadUser { object_id: String, source: String },
    Unresolved { entity: String, reason: String },
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
            _ => None,
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
        });
    }
    if get(root, &["SystemAlertId"]).is_some() {
        return Err(TriggerError::AlertTrigger);
    }
    Err(TriggerError::UnknownShape)
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
    let name = get_str(props, &["accountName", "Name"]).unwrap_or("");
    let suffix = get_str(props, &["upnSuffix", "UPNSuffix"]).unwrap_or("");
    let friendly = get_str(
        props,
        &["friendlyName", "FriendlyName", "displayName", "DisplayName"],
    )
    .unwrap_or("");
    let nt = get_str(props, &["ntDomain", "NTDomain"]).unwrap_or("");
    let mut d = format!("Account name='{name}' upnSuffix='{suffix}'");
    if !nt.is_empty() {
        d.push_str(&format!(" ntDomain='{nt}'"));
    }
    if !friendly.is_empty() {
        d.push_str(&format!(" friendlyName='{friendly}'"));
    }
    d.chars().take(300).collect()
}

fn account(p: &Map<String, Value>) -> Candidate {
    let name = get_str(p, &["accountName", "Name"]);
    let suffix = get_str(p, &["upnSuffix", "UPNSuffix"]);
    if let (Some(n), Some(s)) = (name, suffix) {
        return match Upn::parse(&format!("{n}@{s}")) {
            Ok(upn) => Candidate::Upn {
                upn,
                source: "Account entity (accountName@upnSuffix)".into(),
            },
            Err(e) => Candidate::Unresolved {
                entity: describe(p),
                reason: e,
            },
        };
    }
    if let Some(id) = get_str(p, &["aadUserId", "AadUserId"]) {
        if uuid::Uuid::parse_str(id).is_ok() {
            return Candidate::AadUser {
                object_id: id.to_ascii_lowercase(),
                source: "Account entity (aadUserId via Microsoft Graph)".into(),
            };
        }
    }
    if let Some(f) = get_str(p, &["friendlyName", "FriendlyName"])
        && f.contains('@')
        && let Ok(upn) = Upn::parse(f)
    {
        return Candidate::Upn {
            upn,
            source: "Account entity (friendlyName)".into(),
        };
    }
    let reason = match (name, suffix) {
        (Some(_), None) => {
            "the Account entity has an empty UPN suffix; the domain is never guessed (map UPNSuffix in the analytics rule)"
        }
        _ => {
            "the Account entity has neither accountName@upnSuffix, aadUserId nor a UPN-shaped friendlyName"
        }
    };
    Candidate::Unresolved {
        entity: describe(p),
        reason: reason.into(),
    }
}

fn mailbox(p: &Map<String, Value>) -> Candidate {
    for (keys, source) in [
        (&["upn", "Upn"][..], "Mailbox entity (upn)"),
        (
            &["mailboxPrimaryAddress", "MailboxPrimaryAddress"][..],
            "Mailbox entity (mailboxPrimaryAddress)",
        ),
    ] {
        if let Some(v) = get_str(p, keys)
            && let Ok(upn) = Upn::parse(v)
        {
            return Candidate::Upn {
                upn,
                source: source.into(),
            };
        }
    }
    let addr = get_str(
        p,
        &[
            "mailboxPrimaryAddress",
            "MailboxPrimaryAddress",
            "displayName",
        ],
    )
    .unwrap_or("");
    Candidate::Unresolved {
        entity: format!("Mailbox '{addr}'"),
        reason: "the Mailbox entity has no usable upn or mailboxPrimaryAddress".into(),
    }
}

fn dedup(v: Vec<Candidate>) -> Vec<Candidate> {
    // Linear: a 4 MiB body can hold tens of thousands of entities.
    let mut seen = std::collections::HashSet::new();
    v.into_iter()
        .filter(|c| {
            seen.insert(match c {
                Candidate::Upn { upn, .. } => format!("u:{upn}"),
                Candidate::AadUser { object_id, .. } => format!("a:{object_id}"),
                Candidate::Unresolved { entity, .. } => format!("e:{entity}"),
            })
        })
        .collect()
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
