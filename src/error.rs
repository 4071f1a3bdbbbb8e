//! Every way a request can fail, and the one place each becomes an HTTP response.

use crate::web::body::{self, Body};
use crate::web::html;
use crate::web::router::{Miss, allow_header};
use http::{HeaderValue, Response, StatusCode, header};

/// How an unauthenticated request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Browser navigation: 302 to the auth domain.
    Redirect,
    /// AJAX or API client: 401 with JSON.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("ambiguous request framing: {0}")]
    BadFraming(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no application is configured for host {0:?}")]
    UnknownHost(String),
    #[error("the TLS server name does not match the Host header")]
    Misdirected,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("the request body arrived too slowly")]
    BodyTimeout,
    #[error("the origin could not be reached: {0}")]
    OriginUnavailable(String),
    #[error("the origin did not answer within {0:?}")]
    OriginTimeout(std::time::Duration),
    #[error("authentication required: {reason}")]
    Unauthenticated {
        reason: String,
        login_url: String,
        challenge: Challenge,
    },
    #[error("{email} may not use {app}")]
    Forbidden { email: String, app: String },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(Vec<http::Method>),
    #[error("refusing to serve: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn unauthenticated(
        reason: impl Into<String>,
        login_url: String,
        challenge: Challenge,
    ) -> Self {
        GatewayError::Unauthenticated {
            reason: reason.into(),
            login_url,
            challenge,
        }
    }

    /// A route table's miss as the error it is.
    pub fn from_miss(miss: Miss) -> Self {
        match miss {
            Miss::NotFound => GatewayError::NotFound,
            Miss::MethodNotAllowed(allowed) => GatewayError::MethodNotAllowed(allowed),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadFraming(_) | GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownHost(_) | GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::OriginUnavailable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::OriginTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unauthenticated { challenge, .. } => match challenge {
                Challenge::Redirect => StatusCode::FOUND,
                Challenge::Json => StatusCode::UNAUTHORIZED,
            },
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut resp = match &self {
            GatewayError::Unauthenticated {
                reason,
                login_url,
                challenge: Challenge::Redirect,
            } => {
                let mut r = body::redirect(StatusCode::FOUND, login_url);
                if let Ok(v) = HeaderValue::from_str(reason) {
                    r.headers_mut().insert("portcullis-reason", v);
                }
                r
            }
            GatewayError::Unauthenticated {
                reason, login_url, ..
            } => body::json(
                status,
                &serde_json::json!({ "error": reason, "login_url": login_url }),
            ),
            GatewayError::Forbidden { email, app } => {
                html::html(status, html::forbidden(email, app))
            }
            GatewayError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                body::text(status, "internal error")
            }
            other => body::text(status, other.to_string()),
        };
        if let GatewayError::MethodNotAllowed(allowed) = &self
            && let Ok(v) = HeaderValue::from_str(&allow_header(allowed))
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        if matches!(
            self,
            GatewayError::BadFraming(_) | GatewayError::BadRequest(_) | GatewayError::BodyTimeout
        ) {
            // After a framing error the rest of the stream cannot be trusted.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
