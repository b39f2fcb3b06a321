//! Simulated Entra ID: client-credentials token endpoint, App Service managed identity
//! endpoint, OIDC metadata and JWKS.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::shared::{Inner, Shared};
use crate::types::{DEFAULT_MANAGED_IDENTITY_CLIENT_ID, TokenRequest};

/// Resource identifiers the simulated tenant knows (the real ones).
pub(crate) const EXCHANGE: &str = "https://outlook.office365.com";
pub(crate) const ARM: &str = "https://management.azure.com";
pub(crate) const GRAPH: &str = "https://graph.microsoft.com";
const RESOURCES: [&str; 3] = [EXCHANGE, ARM, GRAPH];

/// Lifetime of issued access tokens, seconds.
const TOKEN_LIFETIME: i64 = 3599;

/// Canonical resource (no trailing slash) for a resource URI, if the tenant knows it.
pub(crate) fn known_resource(resource: &str) -> Option<&'static str> {
    let r = resource.trim().trim_end_matches('/');
    RESOURCES
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(r))
}

fn aad_error(status: StatusCode, error: &str, code: u32, text: &str) -> HttpResponse {
    let trace = uuid::Uuid::new_v4();
    let corr = uuid::Uuid::new_v4();
    let ts = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    HttpResponse::build(status).json(json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
        ),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": corr.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    }))
}

fn tenant_not_found(error: &str, tenant: &str) -> HttpResponse {
    aad_error(
        StatusCode::BAD_REQUEST,
        error,
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

fn resource_not_found(resource: &str, tenant: &str) -> String {
    format!(
        "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
    )
}

/// Entra's answer with the `Date` header of a clock `clock_offset_secs` off
/// (actix adds the real time only when no `Date` is set).
pub(crate) fn dated(data: &Inner, mut resp: HttpResponse) -> HttpResponse {
    let offset = data.st().clock_offset_secs;
    if offset != 0 {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = OffsetDateTime::now_utc() + time::Duration::seconds(offset);
        if let Ok(v) = at.format(&fmt)
            && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&v)
        {
            resp.headers_mut().insert(actix_web::http::header::DATE, v);
        }
    }
    resp
}

/// Builds and signs an app-only v1 access token for `resource` (as requested, without `/.default`).
fn issue_token(inner: &Inner, tid: &str, resource: &str, appid: &str) -> (String, i64) {
    let canonical = known_resource(resource).unwrap_or(resource);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let exp = now + TOKEN_LIFETIME;
    let oid = crate::directory::principal_of(appid);
    let mut claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now - 5,
        "nbf": now - 5,
        "exp": exp,
        "aio": "E2NgYLg0sim",
        "app_displayname": "wipehook",
        "appid": appid,
        "appidacr": "1",
        "idp": format!("https://sts.windows.net/{tid}/"),
        "idtyp": "app",
        "oid": oid.to_string(),
        "rh": "0.AAAAsim.",
        "sub": oid.to_string(),
        "tid": tid,
        "uti": uuid::Uuid::new_v4().simple().to_string(),
        "ver": "1.0",
    });
    // The roles claim carries the app roles the principal holds on the
    // resource (Exchange.ManageAsApp, User.Read.All, ...); ARM tokens carry
    // none (Azure RBAC is checked by ARM itself).
    let (rotated, roles) = {
        let st = inner.st();
        let roles = match canonical {
            EXCHANGE => st.dir.roles_of(&oid, crate::directory::EXCHANGE_APP_ID),
            GRAPH => st.dir.roles_of(&oid, crate::directory::GRAPH_APP_ID),
            _ => vec![],
        };
        (st.rotated, roles)
    };
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    (inner.keys.sign(&claims, rotated), exp)
}

/// `POST /{tenant}/oauth2/v2.0/token` (client credentials with secret or assertion).
pub(crate) async fn token(
    data: Shared,
    path: web::Path<String>,
    form: Result<web::Form<HashMap<String, String>>, actix_web::Error>,
) -> HttpResponse {
    let tenant = path.into_inner();
    let form = match form {
        Ok(f) => f.into_inner(),
        Err(_) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    };
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let scope = form.get("scope").cloned().unwrap_or_default();
    data.st().token_requests.push(TokenRequest {
        client_id: client_id.clone(),
        scope_or_resource: scope.clone(),
        kind: "client_credentials".into(),
    });

    if !data.serves_tenant(&tenant) {
        return tenant_not_found("invalid_request", &tenant);
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    }
    if client_id.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if !client_id.eq_ignore_ascii_case(&data.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                data.tenant_id
            ),
        );
    }
    let secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    match (secret, assertion) {
        (_, Some(a)) if !a.is_empty() => {} // workload identity: any assertion is accepted
        (Some(s), _) if *s == data.client_secret => {}
        (Some(_), _) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        _ => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            );
        }
    }

    let scope_t = scope.trim();
    if scope_t.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if scope_t.split_whitespace().count() > 1 {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope_t} is not valid. .default scope can't be combined with resource-specific scopes."
            ),
        );
    }
    let Some(resource) = scope_t.strip_suffix("/.default") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope_t} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    if known_resource(resource).is_none() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &resource_not_found(resource, &data.tenant_id),
        );
    }
    let (access_token, _) = issue_token(&data, &tenant.to_ascii_lowercase(), resource, &client_id);
    dated(
        &data,
        HttpResponse::Ok().json(json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": access_token,
        })),
    )
}

/// `GET /msi/token?api-version=2019-08-01&resource=...[&client_id=...]` (App Service).
pub(crate) async fn managed_identity_token(
    req: HttpRequest,
    data: Shared,
    query: Result<web::Query<HashMap<String, String>>, actix_web::Error>,
) -> HttpResponse {
    let q = query.map(|q| q.into_inner()).unwrap_or_default();
    let resource = q.get("resource").cloned().unwrap_or_default();
    let client_id = q
        .get("client_id")
        .cloned()
        .unwrap_or_else(|| DEFAULT_MANAGED_IDENTITY_CLIENT_ID.to_string());
    data.st().token_requests.push(TokenRequest {
        client_id: client_id.clone(),
        scope_or_resource: resource.clone(),
        kind: "managed_identity".into(),
    });
    let header_ok = req
        .headers()
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == data.msi_header);
    let err = |status: StatusCode, msg: &str| {
        HttpResponse::build(status).json(json!({
            "statusCode": status.as_u16(),
            "message": msg,
            "correlationId": uuid::Uuid::new_v4().to_string(),
        }))
    };
    if !header_ok {
        return err(
            StatusCode::UNAUTHORIZED,
            "The request is missing the X-IDENTITY-HEADER header or its value is invalid.",
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return err(
            StatusCode::BAD_REQUEST,
            "The api-version parameter is missing or not supported; use 2019-08-01.",
        );
    }
    if resource.is_empty() {
        return err(
            StatusCode::BAD_REQUEST,
            "The 'resource' query parameter is required.",
        );
    }
    if known_resource(&resource).is_none() {
        return err(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS500011: {}",
                resource_not_found(&resource, &data.tenant_id)
            ),
        );
    }
    let tid = data.tenant_id.clone();
    let (access_token, exp) = issue_token(&data, &tid, resource.trim_end_matches('/'), &client_id);
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "expires_on": exp.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    }))
}

/// The tenant whose issuer a metadata document names: a foreign tenant's
/// own, else the simulated tenant's (also for `common`, `organizations`).
fn issuer_tenant(data: &Inner, path: &str) -> String {
    let st = data.st();
    st.foreign_tenants
        .iter()
        .find(|t| t.eq_ignore_ascii_case(path))
        .cloned()
        .unwrap_or_else(|| data.tenant_id.clone())
}

fn oidc_gate(data: &Inner, tenant: &str, count_jwks: bool) -> Option<HttpResponse> {
    let up = {
        let mut st = data.st();
        if count_jwks {
            st.jwks_fetches += 1;
        }
        st.oidc_up
    };
    if !up {
        return Some(aad_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ));
    }
    let known = tenant.eq_ignore_ascii_case(&data.tenant_id)
        || data
            .st()
            .foreign_tenants
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tenant))
        || (count_jwks
            && (tenant.eq_ignore_ascii_case("common")
                || tenant.eq_ignore_ascii_case("organizations")));
    if !known {
        return Some(tenant_not_found("invalid_tenant", tenant));
    }
    None
}

fn openid_configuration(base: &str, tid: &str, v2: bool, cloud_instance: &str) -> Value {
    let (ver, issuer) = if v2 {
        ("/v2.0", format!("{base}/{tid}/v2.0"))
    } else {
        ("", format!("https://sts.windows.net/{tid}/"))
    };
    let mut doc = json!({
        "token_endpoint": if v2 { format!("{base}/{tid}/oauth2/v2.0/token") } else { format!("{base}/{tid}/oauth2/token") },
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": if v2 { format!("{base}/{tid}/oauth2/v2.0/authorize") } else { format!("{base}/{tid}/oauth2/authorize") },
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2{ver}/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2{ver}/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{tid}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": cloud_instance,
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    if !v2 {
        doc["userinfo_endpoint"] = json!(format!("{base}/{tid}/openid/userinfo"));
    } else {
        doc["userinfo_endpoint"] = json!("https://graph.microsoft.com/oidc/userinfo");
    }
    doc
}

/// `GET /{tenant}/.well-known/openid-configuration` (v1 issuer).
pub(crate) async fn openid_configuration_v1(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(r) = oidc_gate(&data, &path, false) {
        return r;
    }
    let cloud = data.st().cloud_instance_name.clone();
    dated(
        &data,
        HttpResponse::Ok().json(openid_configuration(
            &data.base_url(&req),
            &issuer_tenant(&data, &path),
            false,
            &cloud,
        )),
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration` (v2 issuer = `{base}/{tid}/v2.0`).
pub(crate) async fn openid_configuration_v2(
    req: HttpRequest,
    data: Shared,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(r) = oidc_gate(&data, &path, false) {
        return r;
    }
    let cloud = data.st().cloud_instance_name.clone();
    dated(
        &data,
        HttpResponse::Ok().json(openid_configuration(
            &data.base_url(&req),
            &issuer_tenant(&data, &path),
            true,
            &cloud,
        )),
    )
}

/// `GET /{tenant}/discovery/v2.0/keys` (also `/discovery/keys`, `common`, `organizations`).
pub(crate) async fn jwks(data: Shared, path: web::Path<String>) -> HttpResponse {
    if let Some(r) = oidc_gate(&data, &path, true) {
        return r;
    }
    let rotated = data.st().rotated;
    dated(
        &data,
        HttpResponse::Ok().json(data.keys.jwks(&issuer_tenant(&data, &path), rotated)),
    )
}
