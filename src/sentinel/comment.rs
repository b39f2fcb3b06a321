//! The incident comment: the SOC's audit trail of one run, in the basic HTML
//! Sentinel renders. Never longer than Sentinel's 30,000 characters.

use std::fmt::Write;

use super::arm::MAX_COMMENT_CHARS;
use crate::domain::{DeviceOutcome, Mode, RunStatus, TargetState, Verification};
use crate::report::{DeviceResult, RunReport, UserResult};

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

/// Render the comment of a run. `hold_expiry` is shown on held runs.
pub fn render(r: &RunReport, public_url: &str, hold_expiry: &str) -> String {
    let full = render_with(r, public_url, hold_expiry, usize::MAX);
    if full.chars().count() <= MAX_COMMENT_CHARS {
        return full;
    }
    // Too long: keep the header and as many users as fit, then a pointer.
    let mut lo = 0;
    let mut hi = r.users.len();
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if render_with(r, public_url, hold_expiry, mid).chars().count() <= MAX_COMMENT_CHARS {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let out = render_with(r, public_url, hold_expiry, lo);
    out.chars().take(MAX_COMMENT_CHARS).collect()
}

fn render_with(r: &RunReport, public_url: &str, hold_expiry: &str, max_users: usize) -> String {
    let s = &r.summary;
    let link = format!(
        "{}/api/v1/runs/{}",
        public_url.trim_end_matches('/'),
        r.run_id
    );
    let mut h = String::new();
    let title = if r.mode == Mode::DryRun {
        "wipehook (DRY RUN): account-only mobile wipe"
    } else {
        "wipehook: account-only mobile wipe"
    };
    let _ = write!(h, "<h3>{title}</h3>");
    let _ = write!(h, "<p><b>Status:</b> {}", escape(&status_words(r)));
    if let Some(reason) = &r.reason {
        let _ = write!(h, " — {}", escape(reason));
    }
    let _ = write!(
        h,
        "<br><b>Summary:</b> {} user(s), {} device(s): ",
        s.users, s.devices
    );
    let mut parts = vec![];
    let mut add = |n: usize, what: &str| {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    };
    add(s.wipes_requested, "wipe(s) requested");
    add(s.acknowledged, "acknowledged by the device");
    add(s.would_request, "would be requested (dry run)");
    add(s.already_requested, "already requested earlier");
    add(s.skipped, "skipped");
    add(s.failed, "failed");
    add(s.cancelled, "cancelled");
    add(s.held_users, "user(s) held");
    add(s.refused_users, "user(s) refused");
    add(s.protected_users, "protected user(s)");
    add(s.expired_users, "user(s) expired unapproved");
    add(s.unresolved_entities, "entity(ies) unresolved");
    if parts.is_empty() {
        parts.push("nothing to do".into());
    }
    h.push_str(&escape(&parts.join(", ")));
    let _ = write!(
        h,
        "<br><b>Mode:</b> {} | <b>Trigger:</b> {} | <b>Run:</b> <a href=\"{}\" target=\"_blank\">{}</a> | <b>Started:</b> {}",
        escape(r.mode.as_str()),
        escape(r.trigger.as_str()),
        escape(&link),
        escape(r.run_id.as_str()),
        escape(&r.created_at)
    );
    if let Some(a) = &r.approved {
        let _ = write!(
            h,
            "<br><b>Approved by:</b> {} at {}",
            escape(&a.by),
            escape(&a.at)
        );
    }
    if let Some(c) = &r.cancelled {
        let _ = write!(
            h,
            "<br><b>Cancellation requested by:</b> {} at {}",
            escape(&c.by),
            escape(&c.at)
        );
    }
    h.push_str("</p>");
    if r.status == RunStatus::Held {
        let _ = write!(
            h,
            "<p><b>Held: nothing was wiped for the held users.</b> To approve, run the playbook <i>Wipehook-Approve-Run</i> on this incident (or POST {}/approve). The hold expires {} after the run was held.</p>",
            escape(&link),
            escape(hold_expiry)
        );
    }
    if !r.users.is_empty() {
        h.push_str("<table><tr><th>User</th><th>Device</th><th>Client</th><th>Outcome</th></tr>");
        for u in r.users.iter().take(max_users) {
            user_rows(&mut h, u);
        }
        h.push_str("</table>");
        if r.users.len() > max_users {
            let _ = write!(
                h,
                "<p>{} more user(s) not shown (comment size limit); the full result is at <a href=\"{}\" target=\"_blank\">{}</a>.</p>",
                r.users.len() - max_users,
                escape(&link),
                escape(&link)
            );
        }
    }
    if !r.unresolved.is_empty() {
        h.push_str("<p><b>Entities not resolved to a user (no action):</b></p><ul>");
        for u in r.unresolved.iter().take(50) {
            let _ = write!(h, "<li>{}: {}</li>", escape(&u.entity), escape(&u.reason));
        }
        h.push_str("</ul>");
    }
    if !r.errors.is_empty() {
        h.push_str("<p><b>Errors after retries:</b></p><ul>");
        for e in r.errors.iter().take(20) {
            let _ = write!(h, "<li>{}</li>", escape(e));
        }
        h.push_str("</ul>");
    }
    h
}

fn status_words(r: &RunReport) -> String {
    match r.status {
        RunStatus::Queued | RunStatus::Running => "in progress".into(),
        RunStatus::Completed
            if r.summary.wipes_requested > 0
                && r.summary.acknowledged < r.summary.wipes_requested =>
        {
            "completed; wipes requested, awaiting device acknowledgement".into()
        }
        other => other.to_string(),
    }
}

/// The person, as the mailbox says: display name, UPN, object id; and the
/// address and entity field that named them.
fn user_cell(u: &UserResult) -> String {
    let mut cell = String::new();
    if let Some(n) = u.display_name.as_deref().filter(|n| !n.is_empty()) {
        let _ = write!(cell, "{}<br>", escape(n));
    }
    let upn = u.mailbox_upn.as_deref().unwrap_or(&u.upn);
    cell.push_str(&escape(upn));
    let mut small = vec![];
    if let Some(id) = &u.object_id {
        small.push(format!("object id {id}"));
    }
    if u.mailbox_upn.as_deref().is_some_and(|m| m != u.upn) {
        small.push(format!("named as {} by the {}", u.upn, u.source));
    } else {
        small.push(u.source.clone());
    }
    small.extend(u.notes.iter().cloned());
    let _ = write!(cell, "<br><small>{}</small>", escape(&small.join("; ")));
    cell
}

fn user_rows(h: &mut String, u: &UserResult) {
    let user = user_cell(u);
    if u.devices.is_empty() {
        let outcome = match u.state {
            TargetState::Done => "no mobile device".to_string(),
            TargetState::Pending => "in progress".to_string(),
            other => format!(
                "{other}{}",
                u.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        };
        let _ = write!(
            h,
            "<tr><td>{user}</td><td>-</td><td>-</td><td>{}</td></tr>",
            escape(&outcome)
        );
        return;
    }
    for d in &u.devices {
        let dev = format!("{} {}<br><small>{}</small>", d.model, d.os, d.device_id);
        let client = format!("{} {}", d.client_type, d.client_version);
        let _ = write!(
            h,
            "<tr><td>{user}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_keep_br(&dev),
            escape(&client),
            escape(&device_outcome(d))
        );
    }
}

fn escape_keep_br(s: &str) -> String {
    escape(s)
        .replace("&lt;br&gt;", "<br>")
        .replace("&lt;small&gt;", "<small>")
        .replace("&lt;/small&gt;", "</small>")
}

pub fn device_outcome(d: &DeviceResult) -> String {
    let mut o = match d.outcome {
        DeviceOutcome::Requested => match (d.verification, &d.acknowledged_at) {
            (_, Some(at)) => format!("wipe acknowledged by the device at {at}"),
            (Some(Verification::Unconfirmed), _) => format!(
                "wipe requested at {}; still pending at the verification deadline",
                d.requested_at.as_deref().unwrap_or("?")
            ),
            _ => format!(
                "wipe requested at {}; awaiting the device's next sync",
                d.requested_at.as_deref().unwrap_or("?")
            ),
        },
        DeviceOutcome::WouldRequest => "dry run: a wipe would have been requested".into(),
        DeviceOutcome::AlreadyRequested => format!(
            "already requested at {} by run {}",
            d.prior_requested_at.as_deref().unwrap_or("?"),
            d.prior_run_id.as_deref().unwrap_or("?")
        ),
        DeviceOutcome::Cancelled => d
            .reason
            .clone()
            .unwrap_or_else(|| "wipe request cancelled".into()),
        other => format!(
            "{other}{}",
            d.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    };
    for n in &d.notes {
        o.push_str(&format!(" [{n}]"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunId;
    use crate::report::{DeviceResult, Summary, UserResult};

    fn report(users: usize) -> RunReport {
        let dev = |i: usize| DeviceResult {
            guid: format!("00000000-0000-4000-8000-{i:012}"),
            device_id: format!("DEVICE{i:020}"),
            device_type: "iPhone".into(),
            model: "iPhone15C2 <script>".into(),
            os: "iOS 17.4".into(),
            client_type: "EAS".into(),
            client_version: "16.1".into(),
            outcome: DeviceOutcome::Requested,
            reason: None,
            notes: vec![],
            requested_at: Some("2026-11-28T10:00:00Z".into()),
            acknowledged_at: None,
            verification: Some(Verification::Pending),
            prior_run_id: None,
            prior_requested_at: None,
        };
        RunReport {
            run_id: RunId::parse("0190a3c2-7d6e-7abc-8def-0123456789ab").unwrap(),
            status: RunStatus::Completed,
            reason: None,
            done: true,
            tenant_id: "t".into(),
            trigger: crate::domain::TriggerKind::Incident,
            mode: Mode::Enforce,
            force: false,
            caller: "c".into(),
            incident: None,
            created_at: "2026-11-28T10:00:00Z".into(),
            finished_at: None,
            approved: None,
            cancelled: None,
            summary: Summary {
                users,
                devices: users * 2,
                wipes_requested: users * 2,
                ..Default::default()
            },
            users: (0..users)
                .map(|u| UserResult {
                    upn: format!("user{u}@contoso.com"),
                    mailbox_upn: Some(format!("user{u}@contoso.com")),
                    display_name: Some(format!("User {u}")),
                    object_id: None,
                    notes: vec![],
                    source: "Account entity".into(),
                    state: TargetState::Done,
                    reason: None,
                    devices: vec![dev(2 * u), dev(2 * u + 1)],
                })
                .collect(),
            unresolved: vec![],
            errors: vec![],
        }
    }

    #[test]
    fn small_reports_are_complete_and_escaped() {
        let html = render(&report(2), "https://wipehook.example", "24h");
        assert!(html.contains("user1@contoso.com") && html.contains("<table>"));
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "entity and device text is escaped"
        );
        assert!(html.contains("target=\"_blank\""));
    }

    #[test]
    fn large_reports_are_summarised_within_the_limit() {
        let r = report(400);
        let html = render(&r, "https://wipehook.example", "24h");
        assert!(
            html.chars().count() <= MAX_COMMENT_CHARS,
            "{}",
            html.chars().count()
        );
        assert!(
            html.contains("more user(s) not shown"),
            "the cut is said, with a link to the full result"
        );
        assert!(
            html.contains(
                "https://wipehook.example/api/v1/runs/0190a3c2-7d6e-7abc-8def-0123456789ab"
            )
        );
        assert!(
            html.contains("800 wipe(s) requested"),
            "the counts cover every user"
        );
    }
}
