//! A durable task's job: its kind and its typed argument, stored as the
//! `kind` and `arg` columns. `Job::stored` and `Job::from_stored` are the
//! only places that know how an argument is written.

use super::{TaskKind, Upn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Resolve this target's person, list their devices, request wipes.
    Contain { upn: Upn },
    /// An Account that carries only `aadUserId`: find its UPN through Graph.
    Resolve { object_id: String },
    /// Re-read the incident's entities through ARM.
    Entities,
    /// Write the run's record on the incident.
    Comment,
    /// Follow this target's requested wipes until acknowledged or the deadline.
    Verify { upn: Upn },
    /// Undo: cancel the run's unacknowledged wipes.
    Cancel,
    /// A hold not approved in time.
    Expire,
    /// Block this target's suspected attacker devices (after their wipe requests).
    Block { upn: Upn },
    /// Take the configured account steps for this target's person.
    Account { upn: Upn },
}

impl Job {
    pub fn kind(&self) -> TaskKind {
        match self {
            Job::Contain { .. } => TaskKind::Contain,
            Job::Resolve { .. } => TaskKind::Resolve,
            Job::Entities => TaskKind::Entities,
            Job::Comment => TaskKind::Comment,
            Job::Verify { .. } => TaskKind::Verify,
            Job::Cancel => TaskKind::Cancel,
            Job::Expire => TaskKind::Expire,
            Job::Block { .. } => TaskKind::Block,
            Job::Account { .. } => TaskKind::Account,
        }
    }

    /// The stored argument. One task per (run, kind, argument).
    pub fn arg(&self) -> String {
        match self {
            Job::Contain { upn }
            | Job::Verify { upn }
            | Job::Block { upn }
            | Job::Account { upn } => upn.to_string(),
            Job::Resolve { object_id } => object_id.clone(),
            Job::Entities | Job::Comment | Job::Cancel | Job::Expire => String::new(),
        }
    }

    /// The argument shown in logs and error lists.
    pub fn label(&self) -> String {
        self.arg()
    }

    pub fn from_stored(kind: &str, arg: &str) -> Result<Job, String> {
        let kind: TaskKind = kind.parse()?;
        Ok(match kind {
            // Stored forms: an address stored by an older version is read
            // back as it was (the contain job checks it again before use).
            TaskKind::Contain => Job::Contain { upn: arg.parse()? },
            TaskKind::Verify => Job::Verify { upn: arg.parse()? },
            TaskKind::Resolve => Job::Resolve {
                object_id: arg.to_string(),
            },
            TaskKind::Entities => Job::Entities,
            TaskKind::Comment => Job::Comment,
            TaskKind::Cancel => Job::Cancel,
            TaskKind::Expire => Job::Expire,
            TaskKind::Block => Job::Block { upn: arg.parse()? },
            TaskKind::Account => Job::Account { upn: arg.parse()? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip() {
        let upn = Upn::parse("a@contoso.com").unwrap();
        for j in [
            Job::Contain { upn: upn.clone() },
            Job::Verify { upn: upn.clone() },
            Job::Block { upn: upn.clone() },
            Job::Account { upn },
            Job::Resolve {
                object_id: "5e8a6ad4-0000-4000-8000-000000000001".into(),
            },
            Job::Entities,
            Job::Comment,
            Job::Cancel,
            Job::Expire,
        ] {
            assert_eq!(Job::from_stored(j.kind().as_str(), &j.arg()).unwrap(), j);
        }
    }
}
