//! The read model: the result of a run as `GET /api/v1/runs/{id}` returns
//! it and the incident comment shows it, built from the store's records.
//! The API answer and the comment are the same report, so they cannot
//! disagree.

use anyhow::Result;
use serde::Serialize;

use crate::domain::{
    AccountStep, DeviceClass, DeviceOutcome, Mode, RunId, RunOutcome, RunStatus, SkipCause,
    StepState, TargetState, TriggerKind, UserOutcome, Verification, WipeState,
};
use crate::store::{DeviceRecord, RunRecord, Store, TargetRecord, Unresolved};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: RunId,
    pub status: RunStatus,
    /// The truth, in one word: what the first line of the record says.
    pub outcome: RunOutcome,
    /// Why the run is in this status, in words.
    pub reason: Option<String>,
    pub done: bool,
    pub tenant_id: String,
    pub trigger: TriggerKind,
    pub mode: Mode,
    pub force: bool,
    pub caller: String,
    pub incident: Option<IncidentInfo>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub approved: Option<Actor>,
    /// Every approval recorded so far (a large run needs two distinct approvers).
    pub approvals: Vec<Actor>,
    /// Defender's automatic attack disruption acted on the incident (its tag
    /// or title suffix): the account may already be disabled.
    pub attack_disruption: bool,
    pub cancelled: Option<Actor>,
    /// Held: when the hold expires unapproved.
    pub hold_expires_at: Option<String>,
    pub summary: Summary,
    pub users: Vec<UserResult>,
    pub unresolved: Vec<UnresolvedEntity>,
    /// Work that was given up after retries, with the last error.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncidentInfo {
    pub arm_id: String,
    /// Sentinel's incident number.
    pub number: Option<i64>,
    /// The incident's number in the Defender portal (`providerIncidentId`),
    /// the one analysts there see.
    pub defender_number: Option<String>,
    pub title: Option<String>,
    pub severity: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Actor {
    pub by: String,
    pub at: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub users: usize,
    pub devices: usize,
    /// Wipes requested by this run.
    pub wipes_requested: usize,
    /// Dry run: wipes that would have been requested.
    pub would_request: usize,
    pub acknowledged: usize,
    pub already_requested: usize,
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub held_users: usize,
    pub refused_users: usize,
    pub protected_users: usize,
    pub expired_users: usize,
    pub unresolved_entities: usize,
    /// Users by outcome.
    pub outcomes: OutcomeCounts,
}

/// How many users of a run have each outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutcomeCounts {
    pub contained: usize,
    pub no_devices: usize,
    pub pending_acknowledgement: usize,
    pub not_contained: usize,
    pub held: usize,
    pub dry_run: usize,
    pub cancelled: usize,
    pub in_progress: usize,
}

impl OutcomeCounts {
    fn add(&mut self, o: UserOutcome) {
        match o {
            UserOutcome::Contained => self.contained += 1,
            UserOutcome::NoDevices => self.no_devices += 1,
            UserOutcome::PendingAcknowledgement => self.pending_acknowledgement += 1,
            UserOutcome::NotContained => self.not_contained += 1,
            UserOutcome::Held => self.held += 1,
            UserOutcome::DryRun => self.dry_run += 1,
            UserOutcome::Cancelled => self.cancelled += 1,
            UserOutcome::InProgress => self.in_progress += 1,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct UserResult {
    /// The address the entity named.
    pub upn: String,
    /// The UPN of the person the address resolved to (Microsoft Graph), once resolved.
    pub mailbox_upn: Option<String>,
    pub display_name: Option<String>,
    /// The person's Entra object id (Microsoft Graph).
    pub object_id: Option<String>,
    pub source: String,
    /// Fields of the entity that were present but did not decide.
    pub notes: Vec<String>,
    pub state: TargetState,
    pub reason: Option<String>,
    /// The truth about this user.
    pub outcome: UserOutcome,
    /// Not contained: what would contain them, one item per problem (empty
    /// otherwise).
    pub needs: Vec<String>,
    pub devices: Vec<DeviceResult>,
    /// The account steps taken (or not) for this user, in order.
    pub account_steps: Vec<StepResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceResult {
    pub guid: String,
    pub device_id: String,
    pub device_type: String,
    pub model: String,
    pub os: String,
    pub client_type: String,
    pub client_version: String,
    pub outcome: DeviceOutcome,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub requested_at: Option<String>,
    pub acknowledged_at: Option<String>,
    /// pending | acknowledged | unconfirmed (deadline passed)
    pub verification: Option<Verification>,
    /// Followed until then: the verification deadline.
    pub verify_until: Option<String>,
    pub prior_run_id: Option<String>,
    pub prior_requested_at: Option<String>,
    /// Where the earlier run's wipe is (`already_requested`).
    pub prior_state: Option<WipeState>,
    /// Skipped: why (`old_eas`, `unknown_eas_version`, `unknown_client`, `client_type_excluded`).
    pub skip_cause: Option<SkipCause>,
    /// What the device is (triage), and why.
    pub triage: Option<DeviceClass>,
    pub triage_reason: Option<String>,
    /// A suspected attacker device: when wipehook blocked it.
    pub blocked_at: Option<String>,
}

/// One account step of a user in this run.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub step: AccountStep,
    pub state: StepState,
    pub reason: Option<String>,
    pub at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnresolvedEntity {
    pub entity: String,
    pub reason: String,
}

impl RunReport {
    /// What the record on the incident must tell an analyst, as keys: the
    /// record says each once (a new comment carries only the keys no earlier
    /// comment of the run carried).
    pub fn facts(&self) -> Vec<String> {
        let mut f = vec![format!("verdict:{}", self.outcome)];
        if self.outcome == RunOutcome::InProgress {
            return f;
        }
        f.push("decision".into());
        for u in &self.users {
            f.push(format!("user:{}:{}", u.upn, u.outcome));
            for d in &u.devices {
                if d.acknowledged_at.is_some() {
                    f.push(format!("ack:{}", d.guid));
                }
                if d.verification == Some(Verification::Unconfirmed) {
                    f.push(format!("deadline:{}", d.guid));
                }
                if d.outcome == DeviceOutcome::Cancelled {
                    f.push(format!("cancelled:{}", d.guid));
                }
                if d.notes.iter().any(|n| n.starts_with("not cancelled")) {
                    f.push(format!("not_cancelled:{}", d.guid));
                }
                if d.blocked_at.is_some() {
                    f.push(format!("blocked:{}", d.guid));
                }
            }
            for s in &u.account_steps {
                f.push(format!("step:{}:{}:{}", u.upn, s.step, s.state));
            }
        }
        if self.approved.is_some() {
            f.push("approved".into());
        }
        if self.cancelled.is_some() {
            f.push("cancel_requested".into());
        }
        if self.status == RunStatus::Expired {
            f.push("expired".into());
        }
        f.extend(self.errors.iter().map(|e| format!("error:{e}")));
        f
    }

    /// Nothing more will change by itself: no wipe is being followed, no
    /// decision is pending (the record's last comment states this).
    pub fn settled(&self) -> bool {
        self.done && self.outcome != RunOutcome::PendingAcknowledgement
    }
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The report of a run, read from the store; `None` when there is no such run.
pub async fn load(store: &Store, run_id: &RunId) -> Result<Option<RunReport>> {
    let Some(run) = store.run(run_id).await? else {
        return Ok(None);
    };
    let targets = store.targets(run_id).await?;
    let devices = store.devices(run_id).await?;
    let unresolved = store.unresolved(run_id).await?;
    let mut errors = store.task_summary(run_id).await?.errors;
    for r in store.records(run_id).await? {
        if r.state == crate::domain::RecordState::Refused {
            errors.push(format!(
                "note {} of the record could not be written on the incident (the incident refused it)",
                r.seq
            ));
        }
    }
    let approvals = store
        .approvals(run_id)
        .await?
        .into_iter()
        .map(|a| Actor {
            by: a.approver,
            at: rfc3339(a.at),
        })
        .collect();
    let attack_disruption = run.attack_disruption;
    let mut report = build(run, targets, devices, unresolved, errors);
    report.approvals = approvals;
    report.attack_disruption = attack_disruption;
    for s in store.user_steps(run_id).await? {
        if let Some(u) = report.users.iter_mut().find(|u| u.upn == s.upn.as_str()) {
            u.account_steps.push(StepResult {
                step: s.step,
                state: s.state,
                reason: s.reason,
                at: rfc3339(s.at),
            });
        }
    }
    Ok(Some(report))
}

fn build(
    run: RunRecord,
    targets: Vec<TargetRecord>,
    devices: Vec<DeviceRecord>,
    unresolved: Vec<Unresolved>,
    errors: Vec<String>,
) -> RunReport {
    let mut s = Summary {
        users: targets.len(),
        unresolved_entities: unresolved.len(),
        ..Default::default()
    };
    let mut users = vec![];
    for t in targets {
        match t.state {
            TargetState::Held => s.held_users += 1,
            TargetState::Refused => s.refused_users += 1,
            TargetState::Protected => s.protected_users += 1,
            TargetState::Expired => s.expired_users += 1,
            _ => {}
        }
        let mine: Vec<&DeviceRecord> = devices.iter().filter(|d| d.upn == t.upn).collect();
        let (outcome, needs) = user_outcome(&run, &t, &mine);
        s.outcomes.add(outcome);
        let devs: Vec<DeviceResult> = mine.into_iter().map(device_result).collect();
        let person = t.person;
        users.push(UserResult {
            upn: t.upn.to_string(),
            mailbox_upn: person.as_ref().map(|p| p.upn.to_string()),
            display_name: person.as_ref().map(|p| p.display_name.clone()),
            object_id: person.and_then(|p| p.object_id),
            source: t.source,
            notes: t.claims.notes,
            state: t.state,
            reason: t.reason,
            outcome,
            needs,
            devices: devs,
            account_steps: vec![],
        });
    }
    for d in &devices {
        s.devices += 1;
        match d.outcome {
            DeviceOutcome::Requested => s.wipes_requested += 1,
            DeviceOutcome::WouldRequest => s.would_request += 1,
            DeviceOutcome::AlreadyRequested => s.already_requested += 1,
            DeviceOutcome::Skipped => s.skipped += 1,
            DeviceOutcome::Failed => s.failed += 1,
            DeviceOutcome::Cancelled => s.cancelled += 1,
        }
        if d.acked_at.is_some() && d.outcome == DeviceOutcome::Requested {
            s.acknowledged += 1;
        }
    }
    let done = run.status.is_final();
    let outcome = run_outcome(&run, &users, &s);
    let reason = run
        .reason
        .clone()
        .or_else(|| default_reason(&run, &s, done));
    RunReport {
        run_id: run.id,
        status: run.status,
        outcome,
        reason,
        done,
        tenant_id: run.tenant.to_string(),
        trigger: run.trigger,
        mode: run.mode,
        force: run.force,
        caller: run.caller,
        incident: run.incident.map(|inc| IncidentInfo {
            arm_id: inc.arm_id(),
            number: run.incident_number,
            defender_number: run.provider_incident_id,
            title: run.incident_title,
            severity: run.severity.map(|s| s.as_str().to_string()),
        }),
        created_at: rfc3339(run.created_at),
        finished_at: run.finished_at.map(rfc3339),
        approved: run.approved.map(|a| Actor {
            by: a.by,
            at: rfc3339(a.at),
        }),
        approvals: vec![],
        attack_disruption: false,
        cancelled: run.cancelled.map(|a| Actor {
            by: a.by,
            at: rfc3339(a.at),
        }),
        hold_expires_at: (run.status == RunStatus::Held)
            .then_some(run.hold_until)
            .flatten()
            .map(rfc3339),
        summary: s,
        users,
        unresolved: unresolved
            .into_iter()
            .map(|u| UnresolvedEntity {
                entity: u.entity,
                reason: u.reason,
            })
            .collect(),
        errors,
    }
}

/// The truth about one user, and (not contained) what would contain them,
/// one item per problem (a device's item starts with the device's name).
/// A user is contained only when every phone that holds the mailbox's mail
/// acknowledged its wipe: a device list that failed, a wipe that failed, a
/// phone that cannot be wiped account-only or that policy excludes, and a
/// wipe still unacknowledged at its deadline each leave company mail on a
/// phone.
fn user_outcome(
    run: &RunRecord,
    t: &TargetRecord,
    devices: &[&DeviceRecord],
) -> (UserOutcome, Vec<String>) {
    let by_hand = "contain by hand: Clear-MobileDevice -Identity <device> -AccountOnly in Exchange Online PowerShell, or remove the mail account on the phone";
    let one = |o: UserOutcome, need: String| (o, vec![need]);
    match t.state {
        TargetState::Pending if run.cancelled.is_some() => (UserOutcome::Cancelled, vec![]),
        TargetState::Pending => (UserOutcome::InProgress, vec![]),
        TargetState::Held => (UserOutcome::Held, vec![]),
        TargetState::Cancelled => (UserOutcome::Cancelled, vec![]),
        TargetState::Expired => one(
            UserOutcome::NotContained,
            "the hold expired unapproved: run the containment playbook again and approve it, or contain by hand".into(),
        ),
        TargetState::Skipped => one(
            UserOutcome::NotContained,
            "the incident is below policy.min_severity: nothing was wiped; contain by hand if the account is compromised".into(),
        ),
        TargetState::Protected => one(
            UserOutcome::NotContained,
            format!("a protected account is never wiped automatically; if it is compromised, {by_hand}"),
        ),
        TargetState::Refused => one(
            UserOutcome::NotContained,
            format!("refused by policy; if the account is compromised, {by_hand}"),
        ),
        TargetState::Failed => one(
            UserOutcome::NotContained,
            format!("nothing was wiped: run the containment playbook on the incident again; if it fails again, {by_hand}"),
        ),
        TargetState::Done => {
            if devices.is_empty() {
                return (UserOutcome::NoDevices, vec![]);
            }
            if run.mode == Mode::DryRun {
                return (UserOutcome::DryRun, vec![]);
            }
            let mut needs: Vec<String> = vec![];
            let mut pending = false;
            let mut cancelled = false;
            for d in devices {
                let name = device_name(d);
                let need = match d.outcome {
                    DeviceOutcome::Requested if d.acked_at.is_some() => None,
                    DeviceOutcome::Requested
                        if d.verification == Some(Verification::Unconfirmed) =>
                    {
                        Some(format!("{name}: the wipe was not acknowledged by its deadline (the phone has not synced); if the phone is lost, block it (Set-CASMailbox -ActiveSyncBlockedDeviceIDs @{{Add='{}'}}) or disable mobile access", d.device_id))
                    }
                    DeviceOutcome::Requested => {
                        pending = true;
                        None
                    }
                    DeviceOutcome::AlreadyRequested => {
                        if d.prior.as_ref().and_then(|p| p.state) != Some(WipeState::Acknowledged) {
                            pending = true;
                        }
                        None
                    }
                    DeviceOutcome::Skipped => Some(match d.skip_cause {
                        Some(SkipCause::ClientTypeExcluded) => format!(
                            "{name}: not wiped, its client type is not in policy.client_types; add it and rerun, or {by_hand}"
                        ),
                        Some(SkipCause::OldEas) | Some(SkipCause::UnknownEasVersion) => format!(
                            "{name}: cannot be wiped account-only (EAS below 16.1); company mail already on it stays: remove the account on the phone, or wipe it through Intune or another device manager"
                        ),
                        _ => format!(
                            "{name}: not wiped (an unknown mail client); remove the account on the phone, or wipe it through Intune or another device manager"
                        ),
                    }),
                    DeviceOutcome::Failed => Some(format!(
                        "{name}: the wipe failed; run the containment playbook again, or {by_hand}"
                    )),
                    DeviceOutcome::Cancelled => {
                        cancelled = true;
                        None
                    }
                    DeviceOutcome::WouldRequest => None,
                };
                if let Some(n) = need
                    && !needs.contains(&n)
                {
                    needs.push(n);
                }
            }
            if !needs.is_empty() {
                (UserOutcome::NotContained, needs)
            } else if pending {
                (UserOutcome::PendingAcknowledgement, vec![])
            } else if cancelled {
                (UserOutcome::Cancelled, vec![])
            } else {
                (UserOutcome::Contained, vec![])
            }
        }
    }
}

/// A device as an analyst recognises it.
pub fn device_name(d: &DeviceRecord) -> String {
    let model = if d.model.is_empty() {
        &d.device_type
    } else {
        &d.model
    };
    format!("{model} ({} {})", d.client_type.as_str(), d.client_version)
}

/// The truth about the run, from its users'.
fn run_outcome(run: &RunRecord, users: &[UserResult], s: &Summary) -> RunOutcome {
    let o = &s.outcomes;
    if run.status == RunStatus::Skipped {
        return RunOutcome::NothingToDo;
    }
    // A run still reading its incident already has a verdict for the users
    // it knows, once none of them is still being decided.
    if !run.status.is_final() && (users.is_empty() || o.in_progress > 0) {
        return RunOutcome::InProgress;
    }
    if run.mode == Mode::DryRun {
        return RunOutcome::DryRun;
    }
    if run.cancelled.is_some() {
        return RunOutcome::Cancelled;
    }
    if o.held > 0 {
        return RunOutcome::Held;
    }
    if users.is_empty() {
        return RunOutcome::NothingToDo;
    }
    let good = o.contained + o.pending_acknowledgement;
    if o.not_contained > 0 {
        return if good > 0 {
            RunOutcome::PartiallyContained
        } else {
            RunOutcome::NotContained
        };
    }
    if o.pending_acknowledgement > 0 {
        return RunOutcome::PendingAcknowledgement;
    }
    if o.contained == 0 && o.no_devices > 0 {
        return RunOutcome::NothingToDo;
    }
    RunOutcome::Contained
}

fn default_reason(run: &RunRecord, s: &Summary, done: bool) -> Option<String> {
    if !done {
        return None;
    }
    if s.users == 0 {
        return Some(if s.unresolved_entities > 0 {
            "no user could be resolved from the incident's entities".into()
        } else {
            "the incident has no Account or Mailbox entity".into()
        });
    }
    if s.devices == 0 {
        return Some("no mobile device was found for the affected users".into());
    }
    if run.mode == Mode::DryRun {
        return Some(format!(
            "dry run: {} wipe(s) would have been requested; none was sent",
            s.would_request
        ));
    }
    None
}

fn device_result(d: &DeviceRecord) -> DeviceResult {
    DeviceResult {
        guid: d.guid.to_string(),
        device_id: d.device_id.clone(),
        device_type: d.device_type.clone(),
        model: d.model.clone(),
        os: d.os.clone(),
        client_type: d.client_type.as_str().to_string(),
        client_version: d.client_version.clone(),
        outcome: d.outcome,
        reason: d.reason.clone(),
        notes: d.notes.clone(),
        requested_at: d.requested_at.map(rfc3339),
        acknowledged_at: d.acked_at.map(rfc3339),
        verification: d.verification,
        verify_until: d.verify_until.map(rfc3339),
        prior_run_id: d.prior.as_ref().map(|p| p.run_id.to_string()),
        prior_requested_at: d.prior.as_ref().map(|p| rfc3339(p.at)),
        prior_state: d.prior.as_ref().and_then(|p| p.state),
        skip_cause: d.skip_cause,
        triage: d.triage,
        triage_reason: d.triage_reason.clone(),
        blocked_at: d.blocked_at.map(rfc3339),
    }
}
