//! A user a run is about, before the store holds it: found in an entity,
//! then planned by the policy.

use super::{Claims, TargetState, Upn};

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
