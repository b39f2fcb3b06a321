//! Who a target is: what the entity claims, and the person the directory
//! says it names.

use serde::{Deserialize, Serialize};

use super::Upn;

/// What an entity says about a person besides the address a target is keyed
/// on: checked against the mailbox that address resolves to before any
/// policy decision or wipe. A disagreement refuses the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Entra object ids the entity gives (`aadUserId`,
    /// `externalDirectoryObjectId`), lower case. The mailbox must be this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_ids: Vec<String>,
    /// Other addresses of the same entity (a Mailbox entity's `upn` and
    /// `mailboxPrimaryAddress`): each must be an address of the same mailbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Upn>,
    /// Fields that were present but did not decide (shown on the record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Claims {
    pub fn is_empty(&self) -> bool {
        self.object_ids.is_empty() && self.addresses.is_empty() && self.notes.is_empty()
    }
    /// Both sets of claims about one address (two entities naming it).
    pub fn merge(&mut self, other: &Claims) {
        for o in &other.object_ids {
            if !self.object_ids.contains(o) {
                self.object_ids.push(o.clone());
            }
        }
        for a in &other.addresses {
            if !self.addresses.contains(a) {
                self.addresses.push(a.clone());
            }
        }
        for n in &other.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
    }
}

/// A person as Microsoft Graph knows them: the identity every decision is
/// made on. `Get-MobileDevice -Mailbox` accepts any address of a mailbox, so
/// the policy judges the person's UPN and every SMTP address they have, and
/// devices are listed by the UPN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub upn: Upn,
    pub display_name: String,
    /// Entra object id, lower case.
    pub object_id: String,
    /// The primary SMTP address (`mail`), lower case.
    pub mail: Option<String>,
    /// Every SMTP address (`proxyAddresses`, primary and others), lower case.
    pub addresses: Vec<String>,
}

impl DirectoryUser {
    /// Is `address` this person's UPN or one of their SMTP addresses?
    pub fn answers_to(&self, address: &str) -> bool {
        let a = address.trim().to_ascii_lowercase();
        self.upn.as_str() == a || self.addresses.iter().any(|x| *x == a)
    }
}
