//! Simulated Exchange Online Admin API: `POST /adminapi/beta/{tenant}/InvokeCommand`.
//!
//! Shapes follow `shared/docs/exchange-online.md` §1.7 (success), §1.8 (errors), §1.9/§4
//! (throttling), §2 (Get-MobileDevice) and §3 (Clear-MobileDevice, statistics).

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, http::StatusCode, web};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::entra;
use crate::keys::AuthError;
use crate::shared::{Inner, Shared};
use crate::types::{ExchangeCall, Fault, Service, SimDevice};

/// Retry-After (decimal seconds) sent when the concurrency cap throttles with a 429.
pub const CAP_RETRY_AFTER: &str = "0.2";
/// Text of the per-tenant concurrency throttle (plain-text body, HTTP 400).
pub const CONCURRENCY_MESSAGE: &str = "You have reached the maximum number of concurrent requests per tenant. Please wait and try again";
/// Fake back-end server name used in error texts and `X-CalculatedBETarget`.
const BE_SERVER: &str = "SIMPR01MB0001.EURPRD01.PROD.OUTLOOK.COM";
const DEFAULT_PAGE: usize = 1000;
const DEFAULT_RESULT_SIZE: usize = 1000;

/// Exchange date format: 7 fractional digits and an offset.
pub(crate) fn exo_date(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]+00:00"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

fn iso_millis(unix: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// A place in a tenant's concurrency: the sim's own tenant (`None`) or a
/// hosted one (its index).
struct InFlight(Shared, Option<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.st();
        match self.1 {
            None => st.exchange_in_flight = st.exchange_in_flight.saturating_sub(1),
            Some(i) => {
                if let Some(h) = st.hosted.get_mut(i) {
                    h.in_flight = h.in_flight.saturating_sub(1);
                }
            }
        }
    }
}

enum Early {
    Fault(Fault),
    CapThrottle429,
    CapThrottleMessage,
}

struct Common {
    remaining: u64,
    reset: i64,
    in_flight: usize,
}

fn builder(status: StatusCode, c: &Common) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header(("Rate-Limit-Limit", crate::state::RATE_LIMIT.to_string()))
        .insert_header(("Rate-Limit-Remaining", c.remaining.to_string()))
        .insert_header(("Rate-Limit-Reset", iso_millis(c.reset)))
        .insert_header(("X-ConcurrencyCount", c.in_flight.to_string()))
        .insert_header(("X-CombinedAppOnlyConcurrencyCount", c.in_flight.to_string()))
        .insert_header(("request-id", uuid::Uuid::new_v4().to_string()))
        .insert_header(("X-CalculatedBETarget", BE_SERVER))
        .insert_header(("X-ExchangeVersion", "Version 15.20 (Build 9999.0)"));
    b
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        408 => "RequestTimeout",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "Error",
    }
}

/// The §1.8 error envelope.
fn envelope(
    status: StatusCode,
    c: &Common,
    error_id: &str,
    exception: &str,
    text: &str,
) -> HttpResponse {
    let message = match status.as_u16() {
        400 => "Invalid Operation",
        404 => "Error executing cmdlet",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let short = exception.rsplit('.').next().unwrap_or(exception);
    builder(status, c)
        .insert_header(("X-ExceptionType", short))
        .json(json!({
            "error": {
                "code": status_code_name(status),
                "message": message,
                "details": [{
                    "code": "Client",
                    "target": "",
                    "message": format!("{error_id}|{exception}|{text}"),
                }],
                "innererror": {
                    "message": "Error executing cmdlet",
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                    "stacktrace": "   at Microsoft.Exchange.AdminApi.CommandInvocation.CommandInvoker.InvokeCommand()",
                    "internalexception": {
                        "message": text,
                        "type": "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException",
                        "stacktrace": "",
                    }
                }
            },
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [],
        }))
}

fn unauthorized(c: &Common) -> HttpResponse {
    builder(StatusCode::UNAUTHORIZED, c)
        .insert_header((
            "WWW-Authenticate",
            "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", trusted_issuers=\"00000001-0000-0000-c000-000000000000@*\", token_types=\"app_asserted_user_v1 service_asserted_app_v1\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"invalid_token\"",
        ))
        .finish()
}

fn throttle_429(c: &Common, retry_after: &str) -> HttpResponse {
    let mut r = envelope(
        StatusCode::TOO_MANY_REQUESTS,
        c,
        "",
        "Microsoft.Exchange.Data.Directory.ThrottlingException",
        &format!("Too many requests. Please retry after {retry_after} seconds."),
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(retry_after) {
        r.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

fn concurrency_message(c: &Common) -> HttpResponse {
    builder(StatusCode::BAD_REQUEST, c)
        .content_type("text/plain; charset=utf-8")
        .body(CONCURRENCY_MESSAGE)
}

fn not_found_object(c: &Common, what: &str) -> HttpResponse {
    envelope(
        StatusCode::NOT_FOUND,
        c,
        "Ex6F9304",
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        &format!(
            "The operation couldn't be performed because object '{what}' couldn't be found on '{BE_SERVER}'."
        ),
    )
}

fn bad_param(c: &Common, text: &str) -> HttpResponse {
    envelope(
        StatusCode::BAD_REQUEST,
        c,
        "",
        "System.Management.Automation.ParameterBindingException",
        text,
    )
}

/// `POST /adminapi/beta/{tenant}/InvokeCommand`
pub(crate) async fn invoke_command(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let tenant = path.into_inner();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let cmdlet = parsed
        .as_ref()
        .and_then(|v| v.pointer("/CmdletInput/CmdletName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let params = parsed
        .as_ref()
        .and_then(|v| v.pointer("/CmdletInput/Parameters"))
        .cloned()
        .unwrap_or(Value::Null);
    let anchor = req
        .headers()
        .get("X-AnchorMailbox")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (idx, early, common, guard, hang) = {
        let mut st = data.st();
        let idx = st.exchange_calls.len();
        st.exchange_calls.push(ExchangeCall {
            cmdlet: cmdlet.clone(),
            parameters: params.clone(),
            anchor_mailbox: anchor,
            response_status: 0,
            at: std::time::SystemTime::now(),
            answered_at: None,
        });
        let (remaining, reset) = st.rate_tick();
        let mut early = st.exchange_faults.pop_front().map(Early::Fault);
        if early.is_none()
            && let Some(i) = st.cmdlet_faults.iter().position(|(c, _)| *c == cmdlet)
        {
            early = st.cmdlet_faults.remove(i).map(|(_, f)| Early::Fault(f));
        }
        // Fault rules are drawn only when there are any: the stable key is a
        // scan of every device, which a storm of thousands of mailboxes would
        // pay on each call, under the tenant's lock.
        if early.is_none() && !st.fault_rules.is_empty() {
            let subject = ["Identity", "Mailbox"]
                .iter()
                .find_map(|k| params.get(*k).and_then(Value::as_str))
                .unwrap_or_default()
                .to_string();
            // A device is named by its GUID, random per simulated tenant; its
            // draws are keyed by its mailbox and place instead, so a seed
            // fixes each device's faults across runs.
            let stable = st
                .devices
                .iter()
                .find(|d| d.guid.eq_ignore_ascii_case(&subject))
                .map(|d| {
                    let nth = st
                        .devices
                        .iter()
                        .filter(|o| o.upn == d.upn)
                        .position(|o| o.guid == d.guid)
                        .unwrap_or(0);
                    format!("{}#{nth}", d.upn)
                })
                .unwrap_or_else(|| subject.clone());
            early = crate::faults::draw(&mut st, Service::Exchange, &cmdlet, &subject, &stable)
                .map(Early::Fault);
        }
        // A hang is served normally, late: it holds its place in flight.
        let mut hang = None;
        if let Some(Early::Fault(Fault::Hang { ms })) = early {
            hang = Some(std::time::Duration::from_millis(ms));
            early = None;
        }
        if matches!(
            early,
            Some(Early::Fault(
                Fault::Throttle429 { .. } | Fault::ConcurrencyMessage
            ))
        ) {
            st.throttled += 1;
        }
        let mut guard = None;
        // Each tenant has its own concurrency cap (the URL's tenant).
        let hosted = st
            .hosted
            .iter()
            .position(|h| h.tenant_id.eq_ignore_ascii_case(&tenant));
        let st = &mut *st;
        let (cap, in_flight, next_is_message) = match hosted {
            None => (
                st.cap,
                &mut st.exchange_in_flight,
                &mut st.next_throttle_is_message,
            ),
            Some(i) => {
                let h = &mut st.hosted[i];
                (h.cap, &mut h.in_flight, &mut h.next_throttle_is_message)
            }
        };
        if early.is_none() {
            match cap {
                Some(cap) if *in_flight >= cap => {
                    st.throttled += 1;
                    early = Some(if *next_is_message {
                        Early::CapThrottleMessage
                    } else {
                        Early::CapThrottle429
                    });
                    *next_is_message = !*next_is_message;
                }
                _ => {
                    *in_flight += 1;
                    guard = Some(InFlight(data.clone(), hosted));
                }
            }
        }
        let common = Common {
            remaining,
            reset,
            in_flight: *in_flight,
        };
        (idx, early, common, guard, hang)
    };

    let dropped = matches!(early, Some(Early::Fault(Fault::Dropped)));
    let resp = match early {
        Some(Early::Fault(f)) => match f {
            Fault::Throttle429 { retry_after_secs } => {
                throttle_429(&common, &format!("{retry_after_secs}"))
            }
            Fault::ConcurrencyMessage => concurrency_message(&common),
            Fault::Unauthorized401 => unauthorized(&common),
            Fault::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                envelope(
                    status,
                    &common,
                    "",
                    "Microsoft.Exchange.Data.Storage.StorageTransientException",
                    &format!(
                        "The service is temporarily unavailable (simulated HTTP {code}). Please try again later."
                    ),
                )
            }
            Fault::PlainStatus(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                builder(status, &common)
                    .content_type("text/html")
                    .body(format!(
                        "<html><body><h2>{} {}</h2></body></html>",
                        code,
                        status.canonical_reason().unwrap_or("Error")
                    ))
            }
            Fault::Hang { .. } => unreachable!("a hang is served normally"),
            Fault::Dropped => crate::faults::dropped(),
            Fault::CmdletError {
                status,
                exception,
                text,
            } => envelope(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &common,
                "Ex7E2C11",
                &exception,
                &text,
            ),
        },
        Some(Early::CapThrottle429) => throttle_429(&common, CAP_RETRY_AFTER),
        Some(Early::CapThrottleMessage) => concurrency_message(&common),
        None => {
            if let Some(h) = hang {
                tokio::time::sleep(h).await;
            }
            data.apply_latency().await;
            let r = execute(
                &req,
                &data,
                &tenant,
                parsed.as_ref(),
                &cmdlet,
                &params,
                &common,
            );
            drop(guard);
            r
        }
    };

    if let Some(call) = data.st().exchange_calls.get_mut(idx) {
        call.response_status = if dropped { 444 } else { resp.status().as_u16() };
        call.answered_at = Some(std::time::SystemTime::now());
    }
    resp
}

fn execute(
    req: &HttpRequest,
    data: &Inner,
    tenant: &str,
    parsed: Option<&Value>,
    cmdlet: &str,
    params: &Value,
    c: &Common,
) -> HttpResponse {
    let rotated = data.st().rotated;
    let principal = match data.keys.verify_request(req, entra::EXCHANGE, rotated) {
        Ok(claims) => {
            let tid = claims
                .get("tid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // A token of the tenant the URL names (the sim's own or a hosted one).
            if !tid.eq_ignore_ascii_case(tenant) || !data.serves_tenant(tid) {
                return unauthorized(c);
            }
            // Without the app role Exchange answers 403 with a body of NUL
            // bytes (exchange-online.md §1.8, a single source).
            let has_role = claims
                .get("roles")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|v| v == "Exchange.ManageAsApp"));
            if !has_role {
                return builder(StatusCode::FORBIDDEN, c).body(vec![0u8; 16]);
            }
            claims
                .get("oid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        }
        Err(AuthError::Missing | AuthError::Invalid(_) | AuthError::WrongAudience) => {
            return unauthorized(c);
        }
    };
    if !data.serves_tenant(tenant) {
        // A URL naming a tenant the sim does not serve.
        return unauthorized(c);
    }
    if parsed.is_none() || cmdlet.is_empty() {
        return envelope(
            StatusCode::BAD_REQUEST,
            c,
            "",
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "The request body is invalid: expected {\"CmdletInput\":{\"CmdletName\":...,\"Parameters\":{...}}}.",
        );
    }
    let params = match params {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return bad_param(c, "CmdletInput.Parameters must be an object.");
        }
    };
    let base = data.base_url(req);
    let ctx = Ctx {
        req,
        data,
        c,
        base,
        params,
    };
    let name = cmdlet.to_ascii_lowercase();
    // Exchange RBAC: a cmdlet outside the app's management roles is not in
    // its session. How InvokeCommand words that is unverified; the sim
    // answers as PowerShell does for a cmdlet it does not know.
    if !data.st().dir.exo_cmdlets(&principal).contains(&name) {
        return command_not_found(c, cmdlet);
    }
    match name.as_str() {
        "get-mailbox" => get_mailbox(&ctx),
        "get-mobiledevice" => get_mobile_device(&ctx),
        "get-mobiledevicestatistics" => get_statistics(&ctx),
        "clear-mobiledevice" => clear_mobile_device(&ctx),
        "set-casmailbox" => set_cas_mailbox(&ctx),
        "get-managementroleassignment" => get_role_assignments(&ctx),
        "get-managementroleentry" => get_role_entries(&ctx),
        _ => command_not_found(c, cmdlet),
    }
}

fn command_not_found(c: &Common, cmdlet: &str) -> HttpResponse {
    envelope(
        StatusCode::BAD_REQUEST,
        c,
        "",
        "System.Management.Automation.CommandNotFoundException",
        &format!(
            "The term '{cmdlet}' is not recognized as a name of a cmdlet, function, script file, or executable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
        ),
    )
}

/// Get-ManagementRoleAssignment, by `RoleAssignee` (direct assignments and
/// those through role groups, as documented for users and groups; that a
/// service principal's ObjectId resolves here is unverified), by `Role`, or
/// by `Identity`. Without any of them: every assignment of the tenant.
fn get_role_assignments(ctx: &Ctx) -> HttpResponse {
    let assignee = ctx.str_param("RoleAssignee");
    let role = ctx.str_param("Role");
    let identity = ctx.str_param("Identity");
    if assignee.is_some() && identity.is_some() {
        return bad_param(
            ctx.c,
            "Parameter set cannot be resolved using the specified named parameters.",
        );
    }
    let st = ctx.data.st();
    let dir = &st.dir;
    if let Some(a) = &assignee {
        let known = dir.service_principals.iter().any(|s| {
            s.object_id.eq_ignore_ascii_case(a)
                || s.app_id.eq_ignore_ascii_case(a)
                || s.display_name.eq_ignore_ascii_case(a)
        });
        if !known {
            drop(st);
            return not_found_object(ctx.c, a);
        }
    }
    let items: Vec<Value> = dir
        .exo_assignments
        .iter()
        .filter(|x| {
            assignee.as_deref().is_none_or(|a| {
                x.principal_id.eq_ignore_ascii_case(a)
                    || dir.sp(&x.principal_id).is_some_and(|s| {
                        s.app_id.eq_ignore_ascii_case(a) || s.display_name.eq_ignore_ascii_case(a)
                    })
            })
        })
        .filter(|x| role.as_deref().is_none_or(|r| x.role.eq_ignore_ascii_case(r)))
        .filter(|x| {
            identity
                .as_deref()
                .is_none_or(|i| format!("{}-{}", x.role, x.role_group).eq_ignore_ascii_case(i))
        })
        .map(|x| {
            let name = format!("{}-{}", x.role, x.role_group);
            json!({
                "Identity": name,
                "Name": name,
                "Role": x.role,
                "RoleAssignee": x.role_group,
                "RoleAssigneeName": x.role_group,
                "RoleAssigneeType": "RoleGroup",
                "AssignmentMethod": "RoleGroup",
                "EffectiveUserName": dir.sp(&x.principal_id).map(|s| s.display_name.clone()).unwrap_or_default(),
                "Enabled": true,
                "RoleAssignmentDelegationType": "Regular",
                "RecipientWriteScope": if x.custom_recipient_write_scope.is_some() { "CustomRecipientScope" } else { "Organization" },
                "CustomRecipientWriteScope": x.custom_recipient_write_scope,
                "ConfigWriteScope": "OrganizationConfig",
                "CustomConfigWriteScope": null,
            })
        })
        .collect();
    drop(st);
    ctx.page(items, Vec::new())
}

/// Get-ManagementRoleEntry -Identity "<role>\<cmdlet>" (`*` matches any run of characters in either part).
fn get_role_entries(ctx: &Ctx) -> HttpResponse {
    let Some(id) = ctx.str_param("Identity").filter(|s| !s.trim().is_empty()) else {
        return bad_param(
            ctx.c,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        );
    };
    let Some((role_pat, cmdlet_pat)) = id.split_once('\\') else {
        return bad_param(
            ctx.c,
            &format!(
                "The role entry identity '{id}' isn't valid. Use the format <role name>\\<cmdlet name>."
            ),
        );
    };
    let st = ctx.data.st();
    let items: Vec<Value> = st
        .dir
        .exo_roles
        .iter()
        .filter(|r| wildcard(role_pat, &r.name))
        .flat_map(|r| {
            r.entries
                .iter()
                .filter(|(c, _)| wildcard(cmdlet_pat, c))
                .map(|(c, p)| {
                    json!({
                        "Identity": format!("{}\\{c}", r.name),
                        "Name": c,
                        "Role": r.name,
                        "Parameters@odata.type": "#Collection(String)",
                        "Parameters": p,
                        "Type": "Cmdlet",
                        "PSSnapInName": "Microsoft.Exchange.Management.PowerShell.E2010",
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    drop(st);
    if items.is_empty() && !id.contains('*') {
        return not_found_object(ctx.c, &id);
    }
    ctx.page(items, Vec::new())
}

/// A PowerShell `-like` match, case-insensitive, `*` only.
fn wildcard(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.to_ascii_lowercase(), s.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut rest = s.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

struct Ctx<'a> {
    req: &'a HttpRequest,
    data: &'a Inner,
    c: &'a Common,
    base: String,
    params: Map<String, Value>,
}

impl Ctx<'_> {
    fn str_param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    }
    fn param(&self, name: &str) -> Option<&Value> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    fn bool_param(&self, name: &str) -> Option<bool> {
        match self.param(name)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s
                .trim()
                .trim_start_matches('$')
                .to_ascii_lowercase()
                .as_str()
            {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
    fn context_url(&self) -> String {
        format!(
            "{}/adminapi/beta/{}/$metadata#Collection(Exchange.GenericHashTable)",
            self.base, self.data.tenant_id
        )
    }
    /// 200 with a page of `items` starting at the request's `$skiptoken`.
    fn page(&self, items: Vec<Value>, warnings: Vec<String>) -> HttpResponse {
        let skip = match self
            .req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| {
                kv.strip_prefix("$skiptoken=")
                    .or(kv.strip_prefix("%24skiptoken="))
            }) {
            None => 0,
            Some(t) => match t.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return bad_param(self.c, &format!("The skip token '{t}' is invalid.")),
            },
        };
        let page_size = page_size(self.req);
        let end = (skip + page_size).min(items.len());
        let value: Vec<Value> = items
            .get(skip.min(items.len())..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let mut body = json!({
            "@odata.context": self.context_url(),
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": warnings,
            "value": value,
        });
        if end < items.len() {
            body["@odata.nextLink"] = json!(format!(
                "{}/adminapi/beta/{}/InvokeCommand?$skiptoken={end}",
                self.base, self.data.tenant_id
            ));
        }
        self.ok(body, Some(page_size))
    }
    fn ok(&self, body: Value, page_size: Option<usize>) -> HttpResponse {
        let mut b = builder(StatusCode::OK, self.c);
        b.insert_header(("OData-Version", "4.0"));
        let pref = match page_size {
            Some(n) => format!("odata.include-annotations=\"*\",odata.maxpagesize={n}"),
            None => "odata.include-annotations=\"*\"".to_string(),
        };
        b.insert_header(("Preference-Applied", pref));
        b.content_type(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        )
        .body(body.to_string())
    }
}

fn page_size(req: &HttpRequest) -> usize {
    for h in ["Prefer", "X-Prefer"] {
        for v in req.headers().get_all(h) {
            let Ok(s) = v.to_str() else { continue };
            for part in s.split(',') {
                if let Some(n) = part.trim().strip_prefix("odata.maxpagesize=")
                    && let Ok(n) = n.trim().parse::<usize>()
                    && n > 0
                {
                    return n;
                }
            }
        }
    }
    DEFAULT_PAGE
}

fn result_size(ctx: &Ctx) -> Result<usize, HttpResponse> {
    match ctx.param("ResultSize") {
        None | Some(Value::Null) => Ok(DEFAULT_RESULT_SIZE),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| bad_param(ctx.c, "Cannot bind parameter 'ResultSize'.")),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => Ok(usize::MAX),
        Some(Value::String(s)) => s.trim().parse::<usize>().map_err(|_| {
            bad_param(
                ctx.c,
                &format!("Cannot bind parameter 'ResultSize'. Cannot convert value \"{s}\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\"."),
            )
        }),
        Some(_) => Err(bad_param(ctx.c, "Cannot bind parameter 'ResultSize'.")),
    }
}

fn domain_of(upn: &str) -> &str {
    upn.split_once('@')
        .map(|(_, d)| d)
        .unwrap_or("contoso.onmicrosoft.com")
}

fn device_json(d: &SimDevice, tenant_id: &str) -> Value {
    let local = d.upn.split('@').next().unwrap_or(&d.upn);
    let name = d.identity.rsplit('\\').next().unwrap_or_default();
    json!({
        "Identity": d.identity,
        "Name": name,
        "Guid@data.type": "System.Guid",
        "Guid@odata.type": "#Guid",
        "Guid": d.guid,
        "ExchangeObjectId@data.type": "System.Guid",
        "ExchangeObjectId@odata.type": "#Guid",
        "ExchangeObjectId": d.guid,
        "FriendlyName": "",
        "DeviceId": d.device_id,
        "DeviceImei": "",
        "DeviceMobileOperator": "",
        "DeviceOS": d.spec.os,
        "DeviceOSLanguage": "",
        "DeviceTelephoneNumber": "",
        "DeviceType": d.spec.device_type,
        "DeviceUserAgent": d.spec.user_agent,
        "DeviceModel": d.spec.model,
        "ClientType": d.spec.client_type,
        "ClientVersion": d.spec.eas_version,
        "DeviceActiveSyncVersion": d.spec.eas_version,
        "DeviceAccessState": "Allowed",
        "DeviceAccessStateReason": "Global",
        "IsManaged": false,
        "IsCompliant": false,
        "IsDisabled": false,
        "FirstSyncTime@data.type": "System.DateTime",
        "FirstSyncTime": exo_date(d.first_sync_time),
        "WhenCreated@data.type": "System.DateTime",
        "WhenCreated": exo_date(d.first_sync_time),
        "WhenChanged@data.type": "System.DateTime",
        "WhenChanged": exo_date(d.first_sync_time),
        "UserDisplayName": format!("{}/Users/{}", domain_of(&d.upn), local),
        "OrganizationId": format!("EURPR01A001.PROD.OUTLOOK.COM/Microsoft Exchange Hosted Organizations/{} - EURPR01A001.PROD.OUTLOOK.COM/ConfigurationUnits/{tenant_id}/Configuration", domain_of(&d.upn)),
    })
}

fn opt_date(m: &mut Map<String, Value>, key: &str, t: Option<OffsetDateTime>) {
    if let Some(t) = t {
        m.insert(format!("{key}@data.type"), json!("System.DateTime"));
        m.insert(key.to_string(), json!(exo_date(t)));
    } else {
        m.insert(key.to_string(), Value::Null);
    }
}

pub(crate) fn wipe_status(d: &SimDevice) -> &'static str {
    match (d.wipe_requested_at, d.wipe_acked_at, d.account_only) {
        (Some(_), Some(_), true) => "AccountOnlyDeviceWipeSucceeded",
        (Some(_), Some(_), false) => "DeviceWipeSucceeded",
        (Some(_), None, true) => "AccountOnlyDeviceWipePending",
        (Some(_), None, false) => "DeviceWipePending",
        (None, _, _) => "DeviceOk",
    }
}

fn statistics_json(d: &SimDevice) -> Value {
    let mut m = Map::new();
    m.insert("Identity".into(), json!(d.identity));
    m.insert("Guid@data.type".into(), json!("System.Guid"));
    m.insert("Guid@odata.type".into(), json!("#Guid"));
    m.insert(
        "Guid".into(),
        json!(d.statistics_guid.as_deref().unwrap_or(&d.guid)),
    );
    // Get-MobileDeviceStatistics spells it DeviceID (Get-MobileDevice: DeviceId).
    m.insert("DeviceID".into(), json!(d.device_id));
    m.insert("DeviceType".into(), json!(d.spec.device_type));
    m.insert("DeviceModel".into(), json!(d.spec.model));
    m.insert("DeviceOS".into(), json!(d.spec.os));
    m.insert("DeviceUserAgent".into(), json!(d.spec.user_agent));
    m.insert("DeviceFriendlyName".into(), json!(""));
    m.insert("DeviceImei".into(), json!(""));
    m.insert("ClientType".into(), json!(d.spec.client_type));
    m.insert("ClientVersion".into(), json!(d.spec.eas_version));
    m.insert("DeviceActiveSyncVersion".into(), json!(d.spec.eas_version));
    m.insert("Status".into(), json!(wipe_status(d)));
    m.insert("StatusNote".into(), Value::Null);
    m.insert("IsRemoteWipeSupported".into(), json!(true));
    m.insert("NumberOfFoldersSynced".into(), json!(12));
    opt_date(&mut m, "FirstSyncTime", Some(d.first_sync_time));
    opt_date(&mut m, "LastSuccessSync", d.last_success_sync);
    opt_date(&mut m, "LastSyncAttemptTime", d.last_success_sync);
    let (ao, full) = if d.account_only {
        (d.wipe_requested_at.is_some(), false)
    } else {
        (false, d.wipe_requested_at.is_some())
    };
    let pick = |on: bool, t: Option<OffsetDateTime>| if on { t } else { None };
    // Which field holds an account-only acknowledgement is unverified: a
    // device can be told to report it in DeviceWipeAckTime, and to carry an
    // earlier wipe's acknowledgement in the other field.
    let acked = d.wipe_acked_at;
    let (ao_ack, full_ack) = match (ao, d.ack_in_full_wipe_field) {
        (true, false) => (acked, d.stale_ack),
        (true, true) => (d.stale_ack, acked),
        (false, _) => (d.stale_ack, pick(full, acked)),
    };
    opt_date(
        &mut m,
        "AccountOnlyDeviceWipeRequestTime",
        pick(ao, d.wipe_requested_at),
    );
    opt_date(
        &mut m,
        "AccountOnlyDeviceWipeSentTime",
        pick(ao, d.wipe_sent_at),
    );
    opt_date(&mut m, "AccountOnlyDeviceWipeAckTime", ao_ack);
    opt_date(
        &mut m,
        "DeviceWipeRequestTime",
        pick(full, d.wipe_requested_at),
    );
    opt_date(&mut m, "DeviceWipeSentTime", pick(full, d.wipe_sent_at));
    opt_date(&mut m, "DeviceWipeAckTime", full_ack);
    m.insert("LastDeviceWipeRequestor".into(), Value::Null);
    m.insert("LastAccountOnlyDeviceWipeRequestor".into(), Value::Null);
    Value::Object(m)
}

fn mailbox_json(u: &crate::state::User, tenant_id: &str) -> Value {
    let mut addresses: Vec<String> = vec![format!("SMTP:{}", u.primary_smtp)];
    addresses.extend(
        u.proxies
            .iter()
            .filter(|p| **p != u.primary_smtp)
            .map(|p| format!("smtp:{p}")),
    );
    addresses.push(format!("SPO:SPO_{}@SPO_{tenant_id}", u.object_id));
    addresses.push(format!("SIP:{}", u.upn));
    json!({
        "Identity": u.alias,
        "Name": u.alias,
        "Alias": u.alias,
        "DisplayName": u.display_name,
        "UserPrincipalName": u.upn,
        "PrimarySmtpAddress": u.primary_smtp,
        "WindowsEmailAddress": u.primary_smtp,
        "EmailAddresses@odata.type": "#Collection(String)",
        "EmailAddresses": addresses,
        "ExternalDirectoryObjectId": u.object_id,
        "ExchangeGuid@data.type": "System.Guid",
        "ExchangeGuid@odata.type": "#Guid",
        "ExchangeGuid": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, u.object_id.as_bytes()).to_string(),
        "Guid@data.type": "System.Guid",
        "Guid@odata.type": "#Guid",
        "Guid": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, u.object_id.as_bytes()).to_string(),
        "RecipientType": "UserMailbox",
        "RecipientTypeDetails": u.recipient_type,
        "OrganizationalUnit": format!("EURPR01A001.PROD.OUTLOOK.COM/Microsoft Exchange Hosted Organizations/{}", domain_of(&u.upn)),
    })
}

/// Get-Mailbox. Without `Identity` it lists EVERY mailbox of the tenant (as
/// Exchange does); an identity that names several mailboxes is an error.
fn get_mailbox(ctx: &Ctx) -> HttpResponse {
    let tid = &ctx.data.tenant_id;
    let identity = ctx.str_param("Identity");
    let items: Vec<Value> = {
        let st = ctx.data.st();
        match identity.as_deref() {
            None => st.users.iter().map(|u| mailbox_json(u, tid)).collect(),
            Some(id) => {
                let hits = st.matching_mailboxes(id);
                match hits.len() {
                    0 => {
                        drop(st);
                        return not_found_object(ctx.c, id);
                    }
                    1 => vec![mailbox_json(hits[0], tid)],
                    _ => {
                        drop(st);
                        return envelope(
                            StatusCode::BAD_REQUEST,
                            ctx.c,
                            "Ex1C4A7B",
                            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
                            &format!(
                                "The operation couldn't be performed because '{id}' matches multiple entries."
                            ),
                        );
                    }
                }
            }
        }
    };
    ctx.page(items, Vec::new())
}

/// Get-MobileDevice. Without `Mailbox`, a null/missing/unknown `Identity` returns EVERY device
/// in the tenant (documented behaviour).
fn get_mobile_device(ctx: &Ctx) -> HttpResponse {
    let limit = match result_size(ctx) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mailbox = ctx.str_param("Mailbox");
    let identity = ctx.str_param("Identity");
    if mailbox.is_some() && identity.is_some() {
        return bad_param(
            ctx.c,
            "Parameter set cannot be resolved using the specified named parameters.",
        );
    }
    let tid = &ctx.data.tenant_id;
    let items: Vec<Value> = {
        let st = ctx.data.st();
        if let Some(mb) = mailbox {
            let Some(upn) = st.resolve_mailbox(&mb) else {
                drop(st);
                return not_found_object(ctx.c, &mb);
            };
            st.devices
                .iter()
                .filter(|d| d.upn == upn)
                .map(|d| device_json(d, tid))
                .collect()
        } else {
            match identity.as_deref().and_then(|i| st.find_device_index(i)) {
                Some(i) => vec![device_json(&st.devices[i], tid)],
                None => st.devices.iter().map(|d| device_json(d, tid)).collect(),
            }
        }
    };
    let mut items: Vec<Value> = items.into_iter().take(limit).collect();
    ctx.data.st().rename_fields("Get-MobileDevice", &mut items);
    ctx.page(items, Vec::new())
}

fn get_statistics(ctx: &Ctx) -> HttpResponse {
    let mailbox = ctx.str_param("Mailbox");
    let identity = ctx.str_param("Identity");
    let st = ctx.data.st();
    let items: Vec<Value> = match (mailbox, identity) {
        (Some(_), Some(_)) => {
            drop(st);
            return bad_param(
                ctx.c,
                "Parameter set cannot be resolved using the specified named parameters.",
            );
        }
        (Some(mb), None) => {
            let Some(upn) = st.resolve_mailbox(&mb) else {
                drop(st);
                return not_found_object(ctx.c, &mb);
            };
            st.devices
                .iter()
                .filter(|d| d.upn == upn)
                .map(statistics_json)
                .collect()
        }
        (None, Some(id)) => match st.find_device_index(&id) {
            Some(i) => vec![statistics_json(&st.devices[i])],
            None => {
                drop(st);
                return not_found_object(ctx.c, &id);
            }
        },
        (None, None) => {
            drop(st);
            return bad_param(
                ctx.c,
                "Cannot process command because of one or more missing mandatory parameters: Mailbox.",
            );
        }
    };
    let mut items = items;
    st.rename_fields("Get-MobileDeviceStatistics", &mut items);
    drop(st);
    ctx.page(items, Vec::new())
}

fn eas_at_least_16_1(v: &str) -> bool {
    let mut it = v.trim().split('.');
    let major = it.next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    (major, minor) >= (16, 1)
}

/// `Set-CASMailbox -Identity <mailbox> -ActiveSyncBlockedDeviceIDs <value>`:
/// a GenericHashTable with `add` / `remove` changes the list; a plain value
/// (string or array) REPLACES it, as Exchange does (the dangerous default).
fn set_cas_mailbox(ctx: &Ctx) -> HttpResponse {
    let Some(id) = ctx.str_param("Identity").filter(|s| !s.trim().is_empty()) else {
        return bad_param(
            ctx.c,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        );
    };
    let mut st = ctx.data.st();
    let Some(upn) = st.resolve_mailbox(&id) else {
        drop(st);
        return not_found_object(ctx.c, &id);
    };
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => vec![],
        }
    };
    let change = ctx.param("ActiveSyncBlockedDeviceIDs").cloned();
    let Some(user) = st.users.iter_mut().find(|u| u.upn == upn) else {
        drop(st);
        return not_found_object(ctx.c, &id);
    };
    match change {
        Some(Value::Object(o)) => {
            let get = |k: &str| {
                o.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| strings(v))
                    .unwrap_or_default()
            };
            for a in get("add") {
                if !user
                    .blocked_device_ids
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(&a))
                {
                    user.blocked_device_ids.push(a);
                }
            }
            let remove = get("remove");
            user.blocked_device_ids
                .retain(|b| !remove.iter().any(|r| r.eq_ignore_ascii_case(b)));
        }
        Some(v) => user.blocked_device_ids = strings(&v),
        None => {}
    }
    drop(st);
    ctx.page(Vec::new(), Vec::new())
}

fn clear_mobile_device(ctx: &Ctx) -> HttpResponse {
    let Some(id) = ctx.str_param("Identity").filter(|s| !s.trim().is_empty()) else {
        return bad_param(
            ctx.c,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        );
    };
    let cancel = ctx.bool_param("Cancel").unwrap_or(false);
    let account_only = ctx.bool_param("AccountOnly").unwrap_or(false);
    let confirm = ctx.bool_param("Confirm");
    let emails: Vec<String> = match ctx.param("NotificationEmailAddresses") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };

    let mut st = ctx.data.st();
    let Some(i) = st.find_device_index(&id) else {
        drop(st);
        return not_found_object(ctx.c, &id);
    };
    let d = &mut st.devices[i];

    if confirm != Some(false) {
        // Validation call (Confirm missing or true): nothing is executed.
        let action = if cancel {
            format!(
                "Canceling the remote wipe of mobile device \"{}\".",
                d.identity
            )
        } else {
            format!(
                "Wiping mobile device \"{}\". If you confirm the wipe, all data on the device will be permanently removed.",
                d.identity
            )
        };
        let body = json!({
            "@odata.context": ctx.context_url(),
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [],
            "@adminapi.confirmationmessage": format!("Are you sure you want to perform this action?\r\n{action}"),
            "value": [],
        });
        drop(st);
        return ctx.ok(body, None);
    }

    let mut warnings = Vec::new();
    if cancel {
        if d.wipe_requested_at.is_some() && d.wipe_acked_at.is_none() {
            d.wipe_requested_at = None;
            d.wipe_sent_at = None;
            d.account_only = false;
            d.cancel_count += 1;
        } else {
            warnings.push(format!(
                "CannotCancelWipe: There is no pending wipe request for mobile device '{}' to cancel.",
                d.identity
            ));
        }
    } else {
        if account_only
            && d.spec.client_type.eq_ignore_ascii_case("EAS")
            && !eas_at_least_16_1(&d.spec.eas_version)
        {
            let text = format!(
                "The mobile device '{}' doesn't support account-only remote wipe. Account-only remote wipe requires Exchange ActiveSync 16.1 or later; the device uses version {}.",
                d.identity, d.spec.eas_version
            );
            drop(st);
            return envelope(
                StatusCode::BAD_REQUEST,
                ctx.c,
                "Ex1A0F3E",
                "Microsoft.Exchange.Management.Tasks.DeviceDoesNotSupportAccountOnlyWipeException",
                &text,
            );
        }
        let now = OffsetDateTime::now_utc();
        d.wipe_requested_at = Some(now);
        d.account_only = account_only;
        if !account_only {
            d.full_wipe_requested = true;
        }
        d.wipe_request_count += 1;
        d.notification_email_addresses = emails;
    }
    drop(st);
    let body = json!({
        "@odata.context": ctx.context_url(),
        "adminapi.warnings@odata.type": "#Collection(String)",
        "@adminapi.warnings": warnings,
        "value": [],
    });
    ctx.ok(body, None)
}
