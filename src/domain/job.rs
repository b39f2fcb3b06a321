//! A durable task's job: its kind and its typed argument, stored as the
//! `kind` and `arg` columns. `Job::stored` and `Job::from_stored` are the
//! only places that know how an argument is written.

use super::{TaskKind, Upn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Resolve this target's person, list their devices, request wipes.
    Contain { upn: Upn },
    /// An Account that carries only `aadUserId`: find its UPN through Graph.
    /// `notes`: entity fields that did not decide (shown on the record).
    Resolve {
        object_id: String,
        notes: Vec<String>,
    },
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
        }
    }

    /// The stored argument. One task per (run, kind, argument).
    pub fn arg(&self) -> String {
        match self {
            Job::Contain { upn } | Job::Verify { upn } => upn.to_string(),
            Job::Resolve { object_id, notes } => {
                // The object id, then one note per line.
                let mut a = object_id.clone();
                for n in notes {
                    a.push('\n');
                    a.push_str(&n.replace('\n', " "));
                }
                a
            }
            Job::Entities | Job::Comment | Job::Cancel | Job::Expire => String::new(),
        }
    }

    /// The argument shown in logs and error lists (no notes).
    pub fn label(&self) -> String {
        match self {
            Job::Resolve { object_id, .. } => object_id.clone(),
            other => other.arg(),
        }
    }

    pub fn from_stored(kind: &str, arg: &str) -> Result<Job, String> {
        let kind: TaskKind = kind.parse()?;
        Ok(match kind {
            TaskKind::Contain => Job::Contain {
                upn: Upn::parse(arg)?,
            },
            TaskKind::Verify => Job::Verify {
                upn: Upn::parse(arg)?,
            },
            TaskKind::Resolve => {
                let mut lines = arg.split('\n');
                Job::Resolve {
                    object_id: lines.next().unwrap_or("").to_string(),
                    notes: lines.map(String::from).collect(),
                }
            }
            TaskKind::Entities => Job::Entities,
            TaskKind::Comment => Job::Comment,
            TaskKind::Cancel => Job::Cancel,
            TaskKind::Expire => Job::Expire,
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
            Job::Verify { upn },
            Job::Resolve {
                object_id: "5e8a6ad4-0000-4000-8000-000000000001".into(),
                notes: vec!["one".into(), "two".into()],
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
