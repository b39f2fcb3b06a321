//! The read-only Exchange and Sentinel checks, shared by `wipehook doctor`
//! and the service's canary: the canary mailbox's `Get-MobileDevice` and
//! statistics, field by field; wipehook's Exchange RBAC; the workspace, its
//! incident list and wipehook's Azure role on it. Every call here is a read
//! (`exchange` builds only `Get-*` commands for them; ARM and Graph GETs).

use super::Check;
use crate::config::Tenant;
use crate::domain::WorkspaceRef;
use crate::exchange::{CMDLETS_USED, ExchangeClient, FieldProbe, RbacView};
use crate::identity::{Resource, TokenProvider};
use crate::sentinel::arm::ArmClient;
use crate::upstream::{CallError, Lookup};

/// What the probes call through.
pub struct Upstream<'a> {
    pub exchange: &'a ExchangeClient,
    pub arm: &'a ArmClient,
    pub tokens: &'a TokenProvider,
    pub tenant: &'a Tenant,
}

const CANARY_FIX: &str = "set doctor.canary_upn (or canary_upn in the tenant's [[tenants]] entry) to a \
     mailbox with a phone or Outlook mobile on it; it is only ever read (docs/operations.md, The canary)";

/// The fix for a failed Exchange call, by what Exchange said.
fn exchange_fix(e: &CallError, canary: &str) -> String {
    let r = e.reason();
    if r.contains("403") {
        "Exchange refused wipehook's identity (403): the app role Exchange.ManageAsApp is missing or \
         not yet in its token (see token.exchange; docs/setup.md, step 3)"
            .into()
    } else if r.contains("CommandNotFoundException") {
        "the cmdlet is not in wipehook's Exchange role: docs/setup.md, step 4 (see exchange.rbac)"
            .into()
    } else if r.contains("ManagementObjectNotFoundException") {
        format!(
            "Exchange knows no mailbox {canary}: set doctor.canary_upn to a mailbox that exists \
             (docs/operations.md, The canary)"
        )
    } else if r.contains("401") {
        "Exchange refused the token (401): check cloud.exchange_resource and the tenant id".into()
    } else {
        "Exchange did not answer as expected; run the doctor again, and if it persists see \
         docs/operations.md, The canary"
            .into()
    }
}

const CHANGED_FIX: &str = "Exchange changed its answer (InvokeCommand is undocumented and can change \
     without notice): wipehook cannot judge devices without these fields. Set policy.mode = \"dry_run\" \
     until a wipehook release reads the new names, and report the field names \
     (docs/operations.md, The canary)";

fn fields_check(c: Check, p: &FieldProbe, listed: &str) -> Check {
    if let Some(e) = &p.parse_error {
        return c.fail(
            format!("{} row(s); wipehook's parser refused them: {e}", p.rows),
            CHANGED_FIX,
        );
    }
    if !p.missing.is_empty() {
        return c.fail(
            format!(
                "{} row(s); missing field(s) wipehook reads: {}",
                p.rows,
                p.missing.join(", ")
            ),
            CHANGED_FIX,
        );
    }
    if p.rows == 0 {
        return c.warn(
            "the call succeeded, but the canary mailbox has no mobile device: the fields wipehook reads cannot be checked",
            "set up Outlook mobile or a native mail app on the canary mailbox (it is only ever read), \
             or point doctor.canary_upn at a mailbox that has one",
        );
    }
    if !p.absent_optional.is_empty() {
        return c.warn(
            format!(
                "{} row(s) with every required field ({listed}); absent from every row: {}",
                p.rows,
                p.absent_optional.join(", ")
            ),
            "fine for a device never wiped if Exchange leaves empty fields out (unverified); if a wipe was \
             ever acknowledged on the canary device, Exchange renamed the field and wipehook no longer \
             sees acknowledgements (docs/operations.md, The canary)",
        );
    }
    c.pass(format!(
        "{} row(s), each with every field wipehook reads ({listed})",
        p.rows
    ))
}

fn names(fields: &[crate::exchange::Field]) -> String {
    fields
        .iter()
        .map(|f| f.names.join("|"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `exchange.mobile_device`, `exchange.statistics`, `exchange.rbac`.
pub async fn exchange(u: &Upstream<'_>) -> Vec<Check> {
    let t = &u.tenant.id;
    let mut out = vec![];
    let dev = Check::new(
        "exchange.mobile_device",
        "Get-MobileDevice for the canary mailbox answers with the fields wipehook reads",
    )
    .tenant(t);
    let stats = Check::new(
        "exchange.statistics",
        "Get-MobileDeviceStatistics for the canary mailbox answers with the fields wipehook reads",
    )
    .tenant(t);
    match &u.tenant.canary {
        None => {
            out.push(
                dev.checked("doctor.canary_upn")
                    .warn("no canary mailbox is configured: skipped", CANARY_FIX),
            );
            out.push(
                stats
                    .checked("doctor.canary_upn")
                    .warn("no canary mailbox is configured: skipped", CANARY_FIX),
            );
        }
        Some(upn) => {
            let dev = dev.checked(format!(
                "InvokeCommand Get-MobileDevice -Mailbox {upn} -ResultSize Unlimited"
            ));
            out.push(
                match u.exchange.probe_mobile_devices(u.tokens, t, upn).await {
                    Ok(p) => fields_check(dev, &p, &names(crate::exchange::DEVICE_FIELDS)),
                    Err(e) => dev.fail(e.reason().to_string(), exchange_fix(&e, upn.as_str())),
                },
            );
            let stats = stats.checked(format!(
                "InvokeCommand Get-MobileDeviceStatistics -Mailbox {upn}"
            ));
            out.push(match u.exchange.probe_statistics(u.tokens, t, upn).await {
                Ok(p) => fields_check(stats, &p, &names(crate::exchange::STATISTICS_FIELDS)),
                Err(e) => stats.fail(e.reason().to_string(), exchange_fix(&e, upn.as_str())),
            });
        }
    }
    out.push(rbac(u).await);
    out
}

fn by_hand(oid: &str) -> String {
    format!(
        "check by hand in Exchange Online PowerShell (Connect-ExchangeOnline as an Organization \
         Management member):\n\
         Get-ManagementRoleAssignment -RoleAssignee {oid} | ForEach-Object {{ Get-ManagementRoleEntry \"$($_.Role)\\Clear-MobileDevice\" -ErrorAction SilentlyContinue }} | Format-List Role, Name, Parameters\n\
         expected: one entry whose Parameters include AccountOnly, Cancel, Confirm and Identity. To let \
         the doctor and the canary read this themselves, give wipehook's role group the read-only role \
         of docs/setup.md step 4.6"
    )
}

async fn rbac(u: &Upstream<'_>) -> Check {
    let t = &u.tenant.id;
    let c = Check::new(
        "exchange.rbac",
        "wipehook's Exchange role holds Clear-MobileDevice (with AccountOnly), Get-MobileDevice and its statistics",
    )
    .tenant(t);
    let oid = match u.tokens.claims(Resource::Exchange).await {
        Ok(cl) => cl.oid,
        Err(e) => {
            return c
                .checked("wipehook's object id from its Exchange token")
                .skip(format!("no Exchange token: {}", e.reason()));
        }
    };
    let Ok(principal) = uuid::Uuid::parse_str(&oid) else {
        return c
            .checked("wipehook's object id from its Exchange token")
            .skip(format!(
                "the Exchange token has no usable object id ('{oid}')"
            ));
    };
    let c = c.checked(format!(
        "InvokeCommand Get-ManagementRoleAssignment -RoleAssignee {oid}, then Get-ManagementRoleEntry \"<role>\\<cmdlet>\" for each role and cmdlet"
    ));
    let view = match u.exchange.rbac_of(u.tokens, t, &principal).await {
        Err(e) => return c.fail(e.reason().to_string(), exchange_fix(&e, "")),
        Ok(Lookup::Denied(m)) => {
            return c.warn(
                format!(
                    "wipehook's identity may not read its own Exchange RBAC ({m}); no other read-only \
                     way exists from here (a trial Clear-MobileDevice is never sent)"
                ),
                by_hand(&oid),
            );
        }
        Ok(Lookup::Missing(m)) => {
            return c.fail(
                format!("Exchange knows no role assignee {oid}: {m}"),
                "create Exchange's pointer to wipehook's service principal and add it to the role group \
                 (docs/setup.md, step 4.1 and 4.5: New-ServicePrincipal -AppId <client id> -ObjectId <object id>; \
                 Add-RoleGroupMember)",
            );
        }
        Ok(Lookup::Found(v)) => v,
    };
    judge_rbac(c, &view, u.tenant)
}

fn judge_rbac(c: Check, view: &RbacView, tenant: &Tenant) -> Check {
    if view.assignments.iter().all(|a| !a.enabled) {
        return c.fail(
            "no enabled Exchange management role is assigned to wipehook's identity",
            "build the role and role group of docs/setup.md step 4 and add wipehook's service principal to it",
        );
    }
    let notify = !tenant.policy.notification_emails.is_empty();
    let mut problems = vec![];
    let mut held = vec![];
    for (cmdlet, params) in CMDLETS_USED {
        let entries: Vec<_> = view
            .entries
            .iter()
            .filter(|e| e.cmdlet.eq_ignore_ascii_case(cmdlet))
            .collect();
        if entries.is_empty() {
            problems.push(format!("{cmdlet} is in none of its roles"));
            continue;
        }
        let needed: Vec<&str> = params
            .iter()
            .copied()
            .filter(|p| *p != "NotificationEmailAddresses" || notify)
            .collect();
        let best = entries.iter().find(|e| {
            needed
                .iter()
                .all(|p| e.parameters.iter().any(|x| x.eq_ignore_ascii_case(p)))
        });
        match best {
            Some(e) => held.push(format!("{cmdlet} (role '{}')", e.role)),
            None => {
                let e = entries[0];
                let lacking: Vec<&str> = needed
                    .iter()
                    .copied()
                    .filter(|p| !e.parameters.iter().any(|x| x.eq_ignore_ascii_case(p)))
                    .collect();
                problems.push(format!(
                    "{cmdlet} in role '{}' lacks the parameter(s) {}",
                    e.role,
                    lacking.join(", ")
                ));
            }
        }
    }
    let scopes: Vec<String> = view
        .assignments
        .iter()
        .filter(|a| {
            a.enabled
                && view.entries.iter().any(|e| {
                    e.role == a.role && e.cmdlet.eq_ignore_ascii_case("Clear-MobileDevice")
                })
        })
        .map(|a| match &a.custom_write_scope {
            Some(s) => format!("'{s}'"),
            None => a.write_scope.clone(),
        })
        .collect();
    if !problems.is_empty() {
        return c.fail(
            format!("{}; holds {}", problems.join("; "), if held.is_empty() { "none of the three".to_string() } else { held.join(", ") }),
            "add the missing entries to the custom role (docs/setup.md, step 4.2 and 4.3: it must derive \
             from a built-in role that holds all three, e.g. `Add-ManagementRoleEntry \"wipehook Mobile \
             Wipe\\Clear-MobileDevice\"` fails otherwise), or re-add a removed parameter with \
             `Set-ManagementRoleEntry \"<role>\\<cmdlet>\" -Parameters <name> -AddParameter`. Exchange RBAC \
             changes can take an hour to apply",
        );
    }
    let saw = format!(
        "holds {}; Clear-MobileDevice write scope {}",
        held.join(", "),
        scopes.join(", ")
    );
    if scopes.iter().any(|s| s == "Organization" || s.is_empty()) {
        return c.warn(
            format!("{saw}: Clear-MobileDevice may act on every mailbox of the organisation"),
            "limit it with a recipient write scope on the role group (docs/setup.md, step 4.4 and 4.5: \
             New-ManagementScope, New-RoleGroup -CustomRecipientWriteScope)",
        );
    }
    c.pass(saw)
}

fn responder_fix(oid: &str, ws: &str) -> String {
    format!(
        "give wipehook's identity Microsoft Sentinel Responder on the workspace (docs/setup.md, step 5):\n\
         az role assignment create --assignee-object-id {oid} --assignee-principal-type ServicePrincipal \
         --role \"Microsoft Sentinel Responder\" --scope \"{ws}\"\n\
         (Azure portal: the workspace > Access control (IAM) > Add role assignment)"
    )
}

/// Per workspace: `sentinel.workspace`, `sentinel.incidents`, `sentinel.role`.
pub async fn sentinel(u: &Upstream<'_>) -> Vec<Check> {
    let t = &u.tenant.id;
    if u.tenant.workspaces.is_empty() {
        return vec![
            Check::new("sentinel.workspace", "the configured workspace resolves")
                .tenant(t)
                .checked("tenants.workspaces")
                .fail(
                    "tenants.workspaces is empty: every incident is refused (403 workspace_not_allowed)",
                    "list the Sentinel workspace's resource id in tenants.workspaces (docs/setup.md, step 6.1)",
                ),
        ];
    }
    let oid = u.tokens.claims(Resource::Arm).await.map(|c| c.oid);
    let mut out = vec![];
    for ws in &u.tenant.workspaces {
        out.extend(workspace(u, ws, oid.as_ref().ok().map(String::as_str)).await);
    }
    out
}

async fn workspace(u: &Upstream<'_>, ws: &WorkspaceRef, oid: Option<&str>) -> Vec<Check> {
    let t = &u.tenant.id;
    let id = ws.arm_id();
    let who = oid.unwrap_or("<wipehook's object id>");
    let resolve = Check::new(
        "sentinel.workspace",
        "the workspace resolves and has Microsoft Sentinel",
    )
    .tenant(t)
    .subject(id.clone())
    .checked(format!(
        "GET {id}/providers/Microsoft.SecurityInsights/onboardingStates/default"
    ));
    let denied = |c: Check, m: String| c.fail(format!("ARM refused: {m}"), responder_fix(who, &id));
    let resolve = match u.arm.onboarding_state(u.tokens, ws).await {
        Ok(Lookup::Found(())) => resolve.pass("Sentinel is onboarded on the workspace"),
        Ok(Lookup::Missing(m)) => resolve.fail(
            format!("not found: {m}"),
            format!(
                "the workspace id in tenants.workspaces does not exist or has no Sentinel: compare it with \
                 `az monitor log-analytics workspace show -g {} -n {} --query id -o tsv` (subscription, \
                 resource group and name) and correct it (docs/setup.md, step 6.1)",
                ws.resource_group, ws.workspace
            ),
        ),
        Ok(Lookup::Denied(m)) => denied(resolve, m),
        Err(e) => resolve.fail(e.reason().to_string(), "ARM did not answer; run the doctor again"),
    };
    let incidents = Check::new(
        "sentinel.incidents",
        "the workspace's incident list can be read",
    )
    .tenant(t)
    .subject(id.clone())
    .checked(format!(
        "GET {id}/providers/Microsoft.SecurityInsights/incidents?$top=1"
    ));
    let incidents = match u.arm.incidents_page(u.tokens, ws).await {
        Ok(Lookup::Found(n)) => incidents.pass(format!(
            "the list answered ({n} incident(s) on a page of one)"
        )),
        Ok(Lookup::Missing(m)) => {
            incidents.fail(format!("not found: {m}"), "see sentinel.workspace")
        }
        Ok(Lookup::Denied(m)) => denied(incidents, m),
        Err(e) => incidents.fail(
            e.reason().to_string(),
            "ARM did not answer; run the doctor again",
        ),
    };
    let role = Check::new(
        "sentinel.role",
        "wipehook's identity holds Microsoft Sentinel Responder (comments are accepted)",
    )
    .tenant(t)
    .subject(id.clone());
    let role = match oid.and_then(|o| uuid::Uuid::parse_str(o).ok()) {
        None => role
            .checked("wipehook's object id from its ARM token")
            .skip("no ARM token (see token.arm)"),
        Some(p) => {
            let role = role.checked(format!(
                "GET {id}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq '{p}' (at or above the workspace)"
            ));
            match u.arm.role_assignments(u.tokens, ws, &p).await {
                Ok(Lookup::Found(list)) => {
                    let named: Vec<String> = list
                        .iter()
                        .map(|a| format!("{} at {}", a.role_name().unwrap_or(&a.role), a.scope))
                        .collect();
                    if let Some(a) = list.iter().find(|a| a.allows_comments()) {
                        role.pass(format!("{} at {}", a.role_name().unwrap_or(&a.role), a.scope))
                    } else if list.is_empty() {
                        role.fail(
                            format!("no role assignment of {p} applies to the workspace (assignments through a group are not listed)"),
                            responder_fix(who, &id),
                        )
                    } else {
                        role.fail(
                            format!("only {}: incident comments will be refused", named.join(", ")),
                            responder_fix(who, &id),
                        )
                    }
                }
                Ok(Lookup::Denied(m)) => role.fail(
                    format!("ARM refused to list role assignments ({m}): wipehook's identity has no role on the workspace"),
                    responder_fix(who, &id),
                ),
                Ok(Lookup::Missing(m)) => role.fail(format!("not found: {m}"), "see sentinel.workspace"),
                Err(e) => role.fail(e.reason().to_string(), "ARM did not answer; run the doctor again"),
            }
        }
    };
    vec![resolve, incidents, role]
}
