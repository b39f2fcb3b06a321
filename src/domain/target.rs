//! A user a run is about, before the store holds it: found in an entity,
//! then planned by the policy.

use serde::{Deserialize, Serialize};

use super::{Claims, TargetState, Upn};

/// What the trigger body named: a user first seen later (in the incident's
/// own entity list) is not one of these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerScope {
    #[serde(default)]
    pub addresses: Vec<Upn>,
    #[serde(default)]
    pub object_ids: Vec<String>,
    /// The incident's alerts at the trigger (`systemAlertId`).
    #[serde(default)]
    pub alert_ids: Vec<String>,
    /// Notes on object ids the trigger named (entity fields that did not
    /// decide), shown on the record once the object id is resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<(String, Vec<String>)>,
}

impl TriggerScope {
    /// The notes the trigger body gave for an object id.
    pub fn notes_for(&self, object_id: &str) -> Vec<String> {
        self.notes
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(object_id))
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }

    /// The trigger named nobody (an incident not yet synchronised, or no
    /// account entity in the body): the first re-read is the incident's own.
    pub fn names_nobody(&self) -> bool {
        self.addresses.is_empty() && self.object_ids.is_empty()
    }

    /// Did the trigger name this address (or object id)?
    pub fn names(&self, upn: &Upn, object_id: Option<&str>) -> bool {
        self.addresses.contains(upn)
            || object_id.is_some_and(|o| self.object_ids.iter().any(|x| x.eq_ignore_ascii_case(o)))
    }
}

/// A user found in the entities: the address, where it came from, and what
/// else the entity claims about the person.
#[derive(Clone, Debug)]
pub struct Found {
    pub upn: Upn,
    pub source: String,
    pub claims: Claims,
}

/// A target as the policy planned it, ready to be stored.
#[derive(Clone, Debug)]
pub struct NewTarget {
    pub upn: Upn,
    pub source: String,
    pub state: TargetState,
    pub reason: Option<String>,
    /// What the entity also says about the person, checked before any wipe.
    pub claims: Claims,
}
