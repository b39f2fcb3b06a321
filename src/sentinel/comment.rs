//! The record on the incident: one comment per phase of a run, in the basic
//! HTML Sentinel renders, for a narrow side panel and an analyst at 3 a.m.:
//! the verdict first, in plain words; then who needs a person, who waits for
//! a phone, who is done, and who policy left alone, one line per device;
//! then the undo path. Never longer than Sentinel's 30,000 characters, and
//! never a link that needs a bearer token.

use std::fmt::Write;

use super::arm::MAX_COMMENT_CHARS;
use crate::domain::{
    AccountStep, DeviceClass, DeviceOutcome, Mode, RunOutcome, SkipCause, StepState, UserOutcome,
    Verification,
};
use crate::report::{DeviceResult, RunReport, StepResult, UserResult};

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// Where a comment sits in the run's record.
#[derive(Clone, Debug)]
pub enum Phase {
    /// The first comment: everything the run decided.
    First,
    /// A later one: what changed (the facts no earlier comment reported).
    Update { new_facts: Vec<String> },
}

/// What the comment needs besides the report (deployment names, policy).
#[derive(Clone, Debug)]
pub struct Context {
    /// The playbook an approver runs on the incident.
    pub approve_playbook: String,
    /// The playbook that undoes the run.
    pub cancel_playbook: String,
    /// The comment's number in the run's record (1-based).
    pub seq: i64,
}

/// `02 Dec 2026 01:51 UTC`, from an RFC 3339 time.
pub fn human_time(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(time::macros::format_description!(
                    "[day] [month repr:short] [year] [hour]:[minute] UTC"
                ))
                .ok()
        })
        .unwrap_or_else(|| rfc3339.to_string())
}

/// The verdict, in plain words: the first line of every comment.
pub fn verdict(r: &RunReport, cx: &Context) -> String {
    let o = &r.summary.outcomes;
    let s = &r.summary;
    let users = r.users.len();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    match r.outcome {
        RunOutcome::Contained => format!(
            "CONTAINED: every phone of {} acknowledged the account-only wipe.",
            plural(o.contained + o.no_devices, "user", "users")
        ),
        RunOutcome::PendingAcknowledgement => {
            let waiting = r
                .users
                .iter()
                .flat_map(|u| &u.devices)
                .filter(|d| waiting_for(d))
                .count();
            let until = latest_deadline(r)
                .map(|t| format!(" (followed until {})", human_time(&t)))
                .unwrap_or_default();
            format!(
                "WAITING FOR PHONES: wipes requested; {} not yet acknowledged{until}. Company mail leaves a phone when it next connects.",
                plural(waiting, "phone has", "phones have")
            )
        }
        RunOutcome::NotContained | RunOutcome::PartiallyContained => {
            let who: Vec<String> = r
                .users
                .iter()
                .filter(|u| u.outcome == UserOutcome::NotContained)
                .map(|u| person(u).1)
                .collect();
            format!(
                "NOT CONTAINED — NEEDS YOU: {} of {users} {} ({}).",
                who.len(),
                if users == 1 { "user" } else { "users" },
                compact_list(&who, 5)
            )
        }
        RunOutcome::Held => {
            let until = r
                .hold_expires_at
                .as_deref()
                .map(|t| format!(" before {}", human_time(t)))
                .unwrap_or_default();
            format!(
                "HELD — NEEDS APPROVAL: nothing was wiped for {}. To approve, run the playbook {} on this incident{until}.",
                plural(o.held, "held user", "held users"),
                cx.approve_playbook
            )
        }
        RunOutcome::DryRun => format!(
            "DRY RUN: {} would have been requested; none was sent.",
            plural(s.would_request, "wipe", "wipes")
        ),
        RunOutcome::Cancelled => {
            let devices = || r.users.iter().flat_map(|u| &u.devices);
            // Exchange had nothing pending, and no acknowledgement was seen:
            // said as such, never as "acknowledged".
            let not_pending = devices()
                .filter(|d| d.acknowledged_at.is_none())
                .filter(|d| d.notes.iter().any(|n| n.starts_with("not cancelled")))
                .count();
            let mut parts = vec![format!(
                "{} cancelled before the phone received it",
                plural(s.cancelled, "wipe", "wipes")
            )];
            if s.acknowledged > 0 {
                parts.push(format!(
                    "{} already acknowledged (that mail is gone)",
                    plural(s.acknowledged, "wipe was", "wipes were")
                ));
            }
            if not_pending > 0 {
                parts.push(format!(
                    "{} not cancellable: Exchange had nothing pending",
                    plural(not_pending, "wipe", "wipes")
                ));
            }
            format!(
                "CANCELLED by {}: {}.",
                r.cancelled
                    .as_ref()
                    .map(|a| a.by.as_str())
                    .unwrap_or("an analyst"),
                parts.join("; ")
            )
        }
        // A note written while the run is still open (an entity re-read
        // pending) has no reason yet: say what is known so far.
        RunOutcome::NothingToDo => format!(
            "NOTHING TO DO: {}.",
            r.reason.as_deref().unwrap_or(if s.users == 0 {
                "no user to contain"
            } else {
                "no mobile device was found for the affected users"
            })
        ),
        RunOutcome::InProgress => "IN PROGRESS.".into(),
    }
}

fn waiting_for(d: &DeviceResult) -> bool {
    d.outcome == DeviceOutcome::Requested
        && d.acknowledged_at.is_none()
        && d.verification == Some(Verification::Pending)
}

fn latest_deadline(r: &RunReport) -> Option<String> {
    r.users
        .iter()
        .flat_map(|u| &u.devices)
        .filter(|d| waiting_for(d))
        .filter_map(|d| d.verify_until.clone())
        .max()
}

/// (display name, UPN) of a user, as the directory knows them.
fn person(u: &UserResult) -> (Option<String>, String) {
    let upn = u.mailbox_upn.clone().unwrap_or_else(|| u.upn.clone());
    let name = u
        .display_name
        .clone()
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(&upn));
    (name, upn)
}

fn compact_list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

/// How a note lays its users out.
#[derive(Clone, Copy)]
struct Layout {
    /// A group of at most this many users is shown user by user, device
    /// by device; a larger one compactly (users who share a story, named
    /// together).
    detail_upto: usize,
    /// Compact groups name at most this many users per story.
    max_names: usize,
}

/// Render one comment of the run's record. The first says everything; an
/// update says what changed and who still needs a person or a phone.
/// Always within Sentinel's 30,000 characters: a long run names its users
/// compactly, then, if it must, names fewer (each story says how many more,
/// and where the whole list is).
pub fn render(r: &RunReport, cx: &Context, phase: &Phase) -> String {
    let fits = |h: &String| h.chars().count() <= MAX_COMMENT_CHARS;
    let detailed = render_with(
        r,
        cx,
        phase,
        Layout {
            detail_upto: 25,
            max_names: usize::MAX,
        },
    );
    if fits(&detailed) {
        return detailed;
    }
    let compact = |n| {
        render_with(
            r,
            cx,
            phase,
            Layout {
                detail_upto: 0,
                max_names: n,
            },
        )
    };
    let all = compact(usize::MAX);
    if fits(&all) {
        return all;
    }
    let (mut lo, mut hi) = (0, r.users.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&compact(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let shortest = compact(lo);
    if fits(&shortest) {
        return shortest;
    }
    // Only the verdict and where to read the rest (never cut mid-tag).
    format!(
        "<p><b>{}</b></p><p>This run's record is too long for an incident comment. All of it: wipehook runs show {} (or GET /api/v1/runs/{} with the API's credentials).</p>",
        escape(&verdict(r, cx)),
        r.run_id,
        r.run_id
    )
}

fn render_with(r: &RunReport, cx: &Context, phase: &Phase, layout: Layout) -> String {
    let mut h = String::new();
    let _ = write!(h, "<p><b>{}</b></p>", escape(&verdict(r, cx)));
    // Where this record comes from, in one short line.
    let mut about = vec!["wipehook".to_string()];
    if let Some(i) = &r.incident {
        match (&i.defender_number, i.number) {
            (Some(d), _) => about.push(format!("incident {d}")),
            (None, Some(n)) => about.push(format!("incident {n}")),
            _ => {}
        }
    }
    about.push(format!("note {}", cx.seq));
    about.push(format!("run {}", r.run_id));
    if r.mode == Mode::DryRun {
        about.push("dry run".into());
    }
    about.push(human_time(&r.created_at));
    let _ = write!(h, "<p><small>{}</small></p>", escape(&about.join(" · ")));

    if let Phase::Update { new_facts } = phase {
        let changes = changes(r, new_facts);
        if !changes.is_empty() {
            h.push_str("<p><b>Since the last note</b></p><ul>");
            let shown = if layout.detail_upto == 0 {
                20
            } else {
                changes.len()
            };
            for c in changes.iter().take(shown) {
                let _ = write!(h, "<li>{}</li>", escape(c));
            }
            if changes.len() > shown {
                let _ = write!(h, "<li>and {} more changes</li>", changes.len() - shown);
            }
            h.push_str("</ul>");
        }
    }

    let group = |o: &[UserOutcome]| -> Vec<&UserResult> {
        r.users.iter().filter(|u| o.contains(&u.outcome)).collect()
    };
    let needs = group(&[UserOutcome::NotContained]);
    let held = group(&[UserOutcome::Held]);
    let waiting = group(&[UserOutcome::PendingAcknowledgement]);
    let done = group(&[
        UserOutcome::Contained,
        UserOutcome::NoDevices,
        UserOutcome::DryRun,
        UserOutcome::Cancelled,
    ]);
    let first = matches!(phase, Phase::First);
    let run_id = r.run_id.to_string();

    if !needs.is_empty() {
        h.push_str("<p><b>Needs you</b></p><ul>");
        section(&mut h, &needs, layout, Story::Needs, &run_id);
        h.push_str("</ul>");
    }
    if !held.is_empty() {
        h.push_str("<p><b>Held for approval</b> (nothing wiped)</p><ul>");
        section(&mut h, &held, layout, Story::Brief, &run_id);
        h.push_str("</ul>");
    }
    if !waiting.is_empty() {
        let until = latest_deadline(r)
            .map(|t| format!(" — until {}", human_time(&t)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<p><b>Waiting for the phone</b>{}</p><ul>",
            escape(&until)
        );
        section(&mut h, &waiting, layout, Story::Devices, &run_id);
        h.push_str("</ul>");
    }
    if (first || r.settled()) && !done.is_empty() {
        let title = if r.mode == Mode::DryRun {
            "Would be wiped"
        } else {
            "Done"
        };
        let _ = write!(h, "<p><b>{title}</b></p><ul>");
        section(&mut h, &done, layout, Story::Brief, &run_id);
        h.push_str("</ul>");
    }
    if first && !r.unresolved.is_empty() {
        h.push_str("<p><b>No user found in</b></p><ul>");
        for u in r.unresolved.iter().take(20) {
            let _ = write!(h, "<li>{}: {}</li>", escape(&u.entity), escape(&u.reason));
        }
        if r.unresolved.len() > 20 {
            let _ = write!(h, "<li>and {} more</li>", r.unresolved.len() - 20);
        }
        h.push_str("</ul>");
    }
    // Suspected attacker devices, each with what became of it (wiped, blocked).
    let suspects: Vec<(&UserResult, &DeviceResult)> = r
        .users
        .iter()
        .flat_map(|u| u.devices.iter().map(move |d| (u, d)))
        .filter(|(_, d)| d.triage == Some(DeviceClass::SuspectedAttacker))
        .collect();
    if (first || r.settled()) && !suspects.is_empty() {
        h.push_str(
            "<p><b>Suspected attacker devices</b> (first synced after the incident began)</p><ul>",
        );
        for (u, d) in suspects.iter().take(20) {
            let (_, upn) = person(u);
            let _ = write!(h, "<li>{}: {}</li>", escape(&upn), escape(&device_line(d)));
        }
        if suspects.len() > 20 {
            let _ = write!(h, "<li>and {} more</li>", suspects.len() - 20);
        }
        h.push_str("</ul>");
    }
    // Beyond the wipe: the account steps, a phase of their own.
    let stepped: Vec<&UserResult> = r
        .users
        .iter()
        .filter(|u| !u.account_steps.is_empty())
        .collect();
    if !stepped.is_empty() {
        h.push_str("<p><b>Account</b></p><ul>");
        for u in stepped.iter().take(layout.detail_upto.max(20)) {
            let (name, upn) = person(u);
            let steps: Vec<String> = u.account_steps.iter().map(step_line).collect();
            let _ = write!(
                h,
                "<li>{} {}: {}</li>",
                escape(name.as_deref().unwrap_or("")),
                escape(&upn),
                escape(&steps.join("; "))
            );
        }
        if stepped.len() > layout.detail_upto.max(20) {
            let _ = write!(
                h,
                "<li>and {} more (wipehook runs show {run_id})</li>",
                stepped.len() - layout.detail_upto.max(20)
            );
        }
        h.push_str("</ul>");
        let unsynced: Vec<String> = stepped
            .iter()
            .filter(|u| {
                u.account_steps.iter().any(|s| {
                    s.state == StepState::Done
                        && matches!(
                            s.step,
                            AccountStep::RevokeSessions | AccountStep::BlockSignIn
                        )
                })
            })
            .flat_map(|u| {
                let (_, upn) = person(u);
                u.devices.iter().filter(|d| waiting_for(d)).map(move |d| {
                    let model = if d.model.is_empty() {
                        &d.device_type
                    } else {
                        &d.model
                    };
                    format!("{model} of {upn}")
                })
            })
            .collect();
        if !unsynced.is_empty() {
            let shown = unsynced.len().min(10);
            let mut list = unsynced[..shown].join(", ");
            if unsynced.len() > shown {
                let _ = write!(list, " and {} more", unsynced.len() - shown);
            }
            let _ = write!(
                h,
                "<p>The account was cut off while these phones still waited for their wipe; a phone that has not synced may never receive it: {}.</p>",
                escape(&list)
            );
        }
    }
    if r.attack_disruption && (first || r.settled()) {
        h.push_str("<p>Defender's attack disruption acted on this incident: the account may already be disabled. wipehook never re-enables what it did not disable.</p>");
    }
    // What a user's own line already says is not said again.
    let errors: Vec<&String> = r
        .errors
        .iter()
        .filter(|e| {
            !r.users.iter().any(|u| {
                let what = e.split_once(": ").map_or(e.as_str(), |(_, w)| w);
                u.reason.as_deref().is_some_and(|why| why.ends_with(what))
            })
        })
        .collect();
    if !errors.is_empty() {
        h.push_str("<p><b>Gave up after retries</b></p><ul>");
        for e in errors.iter().take(10) {
            let _ = write!(h, "<li>{}</li>", escape(e));
        }
        if errors.len() > 10 {
            let _ = write!(h, "<li>and {} more</li>", errors.len() - 10);
        }
        h.push_str("</ul>");
    }
    // The undo path, in every enforce comment while there is something to undo.
    let undoable = r.users.iter().flat_map(|u| &u.devices).any(waiting_for);
    if r.mode == Mode::Enforce && r.cancelled.is_none() && undoable {
        let _ = write!(
            h,
            "<p>Undo: run the playbook <i>{}</i> on this incident; it cancels the wipes phones have not received yet.</p>",
            escape(&cx.cancel_playbook)
        );
    }
    h
}

/// How much of a user's story a group tells.
#[derive(Clone, Copy, PartialEq)]
enum Story {
    /// Every device, and what would contain the user.
    Needs,
    /// Every device.
    Devices,
    /// One line per user.
    Brief,
}

fn section(h: &mut String, users: &[&UserResult], layout: Layout, story: Story, run_id: &str) {
    if users.len() <= layout.detail_upto {
        for u in users {
            match story {
                Story::Brief => brief_item(h, u),
                _ => user_item(h, u, story == Story::Needs),
            }
        }
        return;
    }
    // Compact: users who share a story, named together, the story once.
    let mut stories: Vec<(String, Vec<String>)> = vec![];
    for u in users {
        let key = story_of(u, story);
        let upn = person(u).1;
        match stories.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(upn),
            None => stories.push((key, vec![upn])),
        }
    }
    for (what, names) in &stories {
        let shown = layout.max_names.min(names.len());
        let mut line = names[..shown].join(", ");
        if shown < names.len() {
            let _ = write!(
                line,
                " and {} more (all of them: wipehook runs show {run_id})",
                names.len() - shown
            );
        }
        let count = if names.len() == 1 {
            "1 user".to_string()
        } else {
            format!("{} users", names.len())
        };
        let _ = write!(
            h,
            "<li><b>{count}</b>: {}<br>{}</li>",
            escape(what),
            escape(&line)
        );
    }
}

/// The part of a user's story others may share (no names, no times).
fn story_of(u: &UserResult, story: Story) -> String {
    match story {
        Story::Needs if !u.needs.is_empty() => {
            let generic: Vec<String> = u.needs.iter().map(|n| strip_device(n, u)).collect();
            format!("→ {}", generic.join("; "))
        }
        Story::Devices => summary_of(u),
        _ => brief_of(u),
    }
}

/// A device's item without the device's name (`<name>: what`).
fn strip_device(need: &str, u: &UserResult) -> String {
    for d in &u.devices {
        let prefix = format!("{}: ", device_label(d));
        if let Some(rest) = need.strip_prefix(&prefix) {
            return format!("a phone {rest}");
        }
    }
    need.to_string()
}

fn device_label(d: &DeviceResult) -> String {
    let model = if d.model.is_empty() {
        &d.device_type
    } else {
        &d.model
    };
    format!("{model} ({} {})", d.client_type, d.client_version)
}

/// A user, named once (display name and UPN), then one line per device,
/// then (needs you) what would contain them.
fn user_item(h: &mut String, u: &UserResult, needs: bool) {
    let (name, upn) = person(u);
    let who = match &name {
        Some(n) => format!("<b>{}</b> {}", escape(n), escape(&upn)),
        None => format!("<b>{}</b>", escape(&upn)),
    };
    let _ = write!(h, "<li>{who}");
    if let Some(id) = &u.object_id {
        let _ = write!(h, "<br><small>object id {}</small>", escape(id));
    }
    if u.mailbox_upn.as_deref().is_some_and(|m| m != u.upn) {
        let _ = write!(h, "<br><small>named as {}</small>", escape(&u.upn));
    }
    if u.devices.is_empty()
        && let Some(reason) = &u.reason
    {
        let _ = write!(h, "<br>{}", escape(reason));
    }
    for d in &u.devices {
        let _ = write!(h, "<br>{}", escape(&device_line(d)));
    }
    if needs {
        for n in &u.needs {
            let _ = write!(h, "<br>→ {}", escape(n));
        }
    }
    h.push_str("</li>");
}

/// One line for a user whose story is short.
fn brief_item(h: &mut String, u: &UserResult) {
    let (name, upn) = person(u);
    let who = match name {
        Some(n) => format!("{} {}", escape(&n), escape(&upn)),
        None => escape(&upn),
    };
    let _ = write!(h, "<li>{who}: {}</li>", escape(&brief_of(u)));
}

fn brief_of(u: &UserResult) -> String {
    match u.outcome {
        UserOutcome::NoDevices => "no mobile device".to_string(),
        UserOutcome::Held => u.reason.clone().unwrap_or_else(|| "held".into()),
        _ => summary_of(u),
    }
}

/// One user's devices, in a few words.
fn summary_of(u: &UserResult) -> String {
    let count = |f: &dyn Fn(&DeviceResult) -> bool| u.devices.iter().filter(|d| f(d)).count();
    let acked = count(&|d| d.acknowledged_at.is_some());
    let waiting = count(&|d| waiting_for(d));
    let earlier = count(&|d| d.outcome == DeviceOutcome::AlreadyRequested);
    let would = count(&|d| d.outcome == DeviceOutcome::WouldRequest);
    let cancelled = count(&|d| d.outcome == DeviceOutcome::Cancelled);
    let mut parts = vec![];
    let n = |k: usize, what: &str| format!("{k} {what}");
    if acked > 0 {
        parts.push(n(acked, "acknowledged"));
    }
    if waiting > 0 {
        parts.push(n(waiting, "requested, waiting for the phone"));
    }
    if earlier > 0 {
        parts.push(n(earlier, "wiped by an earlier run"));
    }
    if would > 0 {
        parts.push(n(would, "would be wiped"));
    }
    if cancelled > 0 {
        parts.push(n(cancelled, "cancelled in time"));
    }
    let phones = if u.devices.len() == 1 {
        "1 phone".to_string()
    } else {
        format!("{} phones", u.devices.len())
    };
    if parts.is_empty() {
        return phones;
    }
    format!("{phones}: {}", parts.join(", "))
}

/// One device, one line.
pub fn device_line(d: &DeviceResult) -> String {
    let model = if d.model.is_empty() {
        d.device_type.clone()
    } else {
        d.model.clone()
    };
    let client = format!("{} {}", d.client_type, d.client_version);
    let at = |t: &Option<String>| t.as_deref().map(human_time).unwrap_or_default();
    let what = match d.outcome {
        DeviceOutcome::Requested => match (&d.acknowledged_at, d.verification) {
            (Some(_), _) => format!("acknowledged {}", at(&d.acknowledged_at)),
            (None, Some(Verification::Unconfirmed)) => format!(
                "requested {}, still not acknowledged at its deadline",
                at(&d.requested_at)
            ),
            _ => format!("requested {}, waiting for the phone", at(&d.requested_at)),
        },
        DeviceOutcome::WouldRequest => "dry run: would be wiped".into(),
        DeviceOutcome::AlreadyRequested => {
            format!("wiped by an earlier run ({})", at(&d.prior_requested_at))
        }
        DeviceOutcome::Skipped => match d.skip_cause {
            // The whole reason is in the API answer; the panel needs the gist.
            Some(SkipCause::OldEas) => format!(
                "not wiped: EAS {} has no account-only wipe (and since 1 March 2026 cannot reach Exchange Online; mail already on it stays)",
                d.client_version
            ),
            _ => format!("not wiped: {}", d.reason.as_deref().unwrap_or("skipped")),
        },
        DeviceOutcome::Failed => {
            format!("wipe failed: {}", d.reason.as_deref().unwrap_or("failed"))
        }
        DeviceOutcome::Cancelled => "wipe cancelled before the phone received it".into(),
    };
    let mut line = format!("{model} ({client}): {what}");
    match d.triage {
        Some(DeviceClass::SuspectedAttacker) => {
            line.push_str("; suspected attacker device (first synced after the incident began)");
            if d.blocked_at.is_some() {
                line.push_str(", blocked");
            } else if d.outcome == DeviceOutcome::WouldRequest {
                line.push_str(", would be blocked");
            }
        }
        Some(DeviceClass::Stale) => {
            line.push_str("; stale: no recent sync, the wipe will probably never land")
        }
        _ => {}
    }
    // Every note the run made about the phone (a client's known limits,
    // Exchange's warnings, a cancel with nothing pending) is on the record.
    // (A phone that was not wiped keeps only what concerns it.)
    let sent = matches!(
        d.outcome,
        DeviceOutcome::Requested | DeviceOutcome::AlreadyRequested | DeviceOutcome::Cancelled
    );
    for n in d
        .notes
        .iter()
        .filter(|n| sent || n.starts_with("not cancelled"))
    {
        let _ = write!(line, "; {n}");
    }
    line
}

/// One account step in the words of the record.
fn step_line(s: &StepResult) -> String {
    let what = match s.step {
        AccountStep::RevokeSessions => "sign-in sessions",
        AccountStep::BlockSignIn => "sign-in block",
        AccountStep::ConfirmCompromised => "confirmed compromised",
    };
    let state = match s.state {
        StepState::Done => match s.step {
            AccountStep::RevokeSessions => format!("revoked {}", human_time(&s.at)),
            AccountStep::BlockSignIn => format!("blocked {}", human_time(&s.at)),
            AccountStep::ConfirmCompromised => format!("done {}", human_time(&s.at)),
        },
        StepState::WouldDo => "dry run: would be done".into(),
        StepState::AlreadyDone => "already done by an earlier run".into(),
        StepState::Undone => "undone by the cancel".into(),
        StepState::Skipped | StepState::Failed => {
            let word = if s.state == StepState::Skipped {
                "skipped"
            } else {
                "failed"
            };
            format!("{word}: {}", s.reason.as_deref().unwrap_or(""))
        }
    };
    let mut line = format!("{what} {state}");
    // What a cancel said of a step it could not undo.
    if s.state == StepState::Done
        && let Some(r) = &s.reason
    {
        if let Some(i) = r.find("Cancelled: ") {
            let _ = write!(line, " ({})", &r[i + "Cancelled: ".len()..]);
        } else if r.starts_with("not re-enabled") {
            let _ = write!(line, " ({r})");
        }
    }
    if s.step == AccountStep::BlockSignIn
        && s.state == StepState::Done
        && s.reason
            .as_deref()
            .is_some_and(|r| r.contains("on-premises"))
    {
        line.push_str(" (synchronised from on-premises AD: disable it there too)");
    }
    line
}

/// What changed since the last note, from the facts no earlier note carried.
fn changes(r: &RunReport, new_facts: &[String]) -> Vec<String> {
    let mut out = vec![];
    let has = |k: &str| new_facts.iter().any(|f| f == k);
    if has("approved")
        && let Some(a) = &r.approved
    {
        out.push(format!("approved by {} at {}", a.by, human_time(&a.at)));
    }
    if has("cancel_requested")
        && let Some(c) = &r.cancelled
    {
        out.push(format!(
            "cancellation requested by {} at {}",
            c.by,
            human_time(&c.at)
        ));
    }
    if has("expired") {
        out.push("the hold expired without approval; nothing held was wiped".into());
    }
    for u in &r.users {
        let (name, upn) = person(u);
        let who = name.map(|n| format!("{n} {upn}")).unwrap_or(upn);
        for d in &u.devices {
            let model = if d.model.is_empty() {
                &d.device_type
            } else {
                &d.model
            };
            if has(&format!("ack:{}", d.guid)) {
                out.push(format!(
                    "{who}: {model} acknowledged the wipe at {}",
                    d.acknowledged_at
                        .as_deref()
                        .map(human_time)
                        .unwrap_or_default()
                ));
            }
            if has(&format!("deadline:{}", d.guid)) {
                out.push(format!(
                    "{who}: {model} did not acknowledge by its deadline"
                ));
            }
            if has(&format!("cancelled:{}", d.guid)) {
                out.push(format!("{who}: {model}: wipe cancelled in time"));
            }
            if has(&format!("not_cancelled:{}", d.guid)) {
                out.push(format!(
                    "{who}: {model}: not cancelled: nothing pending (already acknowledged or never requested)"
                ));
            }
            if has(&format!("blocked:{}", d.guid)) {
                out.push(format!("{who}: {model}: suspected attacker device blocked"));
            }
        }
        for s in &u.account_steps {
            if has(&format!("step:{}:{}:{}", u.upn, s.step, s.state)) {
                out.push(format!("{who}: {}", step_line(s)));
            }
        }
        if has(&format!("user:{}:{}", u.upn, u.outcome))
            && !u.devices.iter().any(|d| {
                has(&format!("ack:{}", d.guid))
                    || has(&format!("deadline:{}", d.guid))
                    || has(&format!("cancelled:{}", d.guid))
            })
        {
            let what = match u.outcome {
                UserOutcome::Held => "held for approval".to_string(),
                UserOutcome::NotContained => "needs you (below)".to_string(),
                UserOutcome::PendingAcknowledgement => {
                    "wipes requested, waiting for the phone".into()
                }
                UserOutcome::Contained => "contained".into(),
                UserOutcome::NoDevices => "no mobile device".into(),
                UserOutcome::Cancelled => "cancelled".into(),
                UserOutcome::DryRun => "dry run".into(),
                UserOutcome::InProgress => "in progress".into(),
            };
            out.push(format!("{who}: {what}"));
        }
    }
    for f in new_facts.iter().filter_map(|f| f.strip_prefix("error:")) {
        out.push(format!("gave up: {f}"));
    }
    out
}

/// The comment as plain text (the Defender incident's comments are text).
pub fn plain_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                let t = tag.trim_start_matches('/').to_ascii_lowercase();
                if t.starts_with("br") || t.starts_with("li") || t.starts_with('p') {
                    if !out.ends_with('\n') && !out.is_empty() {
                        out.push('\n');
                    }
                    if tag.eq_ignore_ascii_case("li") {
                        out.push_str("- ");
                    }
                }
            }
            _ if in_tag => tag.push(c),
            _ => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_at_3am() {
        assert_eq!(
            human_time("2026-12-02T01:51:04.102Z"),
            "02 Dec 2026 01:51 UTC"
        );
    }

    #[test]
    fn plain_text_keeps_the_lines() {
        let t = plain_text("<p><b>CONTAINED: x &amp; y.</b></p><ul><li>a</li><li>b</li></ul>");
        assert_eq!(t, "CONTAINED: x & y.\n- a\n- b");
    }
}
