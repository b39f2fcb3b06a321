//! The one error type of the API: a status, a stable code, a message. An
//! unexpected error is logged with its whole cause chain and the request id;
//! the client sees no internals.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::auth::AuthError;
use crate::intake::IntakeError;
use crate::sentinel::TriggerError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// An unexpected failure: logged with every cause; a generic answer.
    pub fn internal(e: impl Into<anyhow::Error>) -> ApiError {
        let e: anyhow::Error = e.into();
        tracing::error!(error = %format!("{e:#}"), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; nothing was lost if a 202 was not returned, retry the call",
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// The `{"code", "message"}` part of the error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"code": self.code, "message": self.message})
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header((
                "WWW-Authenticate",
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.message.replace('"', "'")
                ),
            ));
        } else if self.code == "keys_unavailable" {
            // The token may be fine: say only that bearer auth applies.
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"wipehook\""));
        }
        if let Some(s) = self.retry_after {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.json(json!({"error": self.body()}))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                format!(
                    "cannot verify the caller's token now ({m}); the call was not accepted, retry later"
                ),
            )
            .with_retry_after(30),
            AuthError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing bearer token",
            ),
            AuthError::Invalid(m) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", m),
        }
    }
}

impl From<TriggerError> for ApiError {
    fn from(t: TriggerError) -> ApiError {
        let code = match t {
            TriggerError::UnknownShape => "unknown_shape",
            TriggerError::AlertTrigger => "alert_trigger_unsupported",
            TriggerError::NoIncidentId => "no_incident_id",
            TriggerError::BadIncidentId(_) => "invalid_incident_id",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, t.to_string())
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> ApiError {
        match e {
            IntakeError::Trigger(t) => t.into(),
            IntakeError::WorkspaceNotAllowed(..) => ApiError::new(
                StatusCode::FORBIDDEN,
                "workspace_not_allowed",
                e.to_string(),
            ),
            IntakeError::UnknownTenant(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_not_configured",
                e.to_string(),
            ),
            IntakeError::NoAccountTag | IntakeError::NotInIncident(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                if matches!(e, IntakeError::NoAccountTag) {
                    "no_account_tag"
                } else {
                    "account_not_in_incident"
                },
                e.to_string(),
            ),
            IntakeError::NotSynchronised(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "incident_not_synchronised",
                e.to_string(),
            )
            .with_retry_after(60),
            IntakeError::Store(e) => ApiError::internal(e),
        }
    }
}
