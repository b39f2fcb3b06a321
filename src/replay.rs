//! `wipehook replay FILE`: what a trigger body would lead to, offline. No
//! Exchange call, no comment: targets and the policy decisions that need
//! no device list.

use serde_json::{Value, json};

use crate::config::Config;
use crate::domain::{Found, Mode, TargetState};
use crate::policy;
use crate::sentinel::{self, Candidate, TriggerKind};

pub fn explain(config: &Config, body: &Value) -> Result<Value, String> {
    let trigger = sentinel::parse_trigger(body).map_err(|e| e.to_string())?;
    let settings = &config.settings;
    let tenants = &config.tenants;
    let tenant = match &trigger.incident {
        Some(inc) => tenants
            .iter()
            .find(|t| t.workspaces.contains(&inc.workspace)),
        None => tenants.first(),
    };
    let pol = tenant
        .map(|t| t.policy.clone())
        .unwrap_or_else(|| settings.policy.clone());
    let mut upns = vec![];
    let mut others = vec![];
    for c in &trigger.candidates {
        match c {
            Candidate::Upn {
                upn,
                source,
                claims,
            } => upns.push(Found {
                upn: upn.clone(),
                source: source.clone(),
                claims: claims.clone(),
            }),
            Candidate::AadUser {
                object_id, source, ..
            } => others.push(json!({"aad_user_id": object_id, "source": source, "decision": "would be resolved through Microsoft Graph, then decided like the others"})),
            Candidate::Unresolved { entity, reason } => others.push(json!({"entity": entity, "decision": "unresolved", "reason": reason})),
        }
    }
    let severity = if trigger.kind == TriggerKind::Incident {
        policy::severity(&pol, trigger.severity)
    } else {
        Ok(())
    };
    let targets: Vec<Value> = policy::plan_targets(&pol, &upns, true)
        .into_iter()
        .map(|t| {
            let would = match (t.state, severity.is_ok()) {
                (_, false) => "nothing (severity below policy.min_severity)".to_string(),
                (TargetState::Pending, true) if pol.mode == Mode::DryRun => "list devices; dry run: no wipe sent".into(),
                (TargetState::Pending, true) => "resolve the person (Microsoft Graph), judge them again on every address they have, list their devices by their UPN (Get-MobileDevice -Mailbox), then Clear-MobileDevice -AccountOnly for each eligible device".into(),
                (TargetState::Held, true) => "held for approval; nothing wiped until approved".into(),
                (other, true) => format!("no action ({other})"),
            };
            json!({"upn": t.upn, "source": t.source, "state": t.state, "reason": t.reason, "would": would})
        })
        .collect();
    Ok(json!({
        "trigger": trigger.kind.as_str(),
        "incident": trigger.incident.as_ref().map(|i| i.arm_id()),
        "incident_number": trigger.incident_number,
        "severity": trigger.severity.map(|s| s.as_str()),
        "tenant": tenant.map(|t| t.id.to_string()),
        "workspace_configured": tenant.is_some(),
        "mode": pol.mode.as_str(),
        "severity_check": severity.err().unwrap_or_else(|| "ok".into()),
        "targets": targets,
        "other_entities": others,
        "note": "offline: no Exchange call was made and no comment was written; device-level decisions (client type, EAS version, earlier wipes) need the device list",
    }))
}
