//! `ApiError`: every failure a handler can return, and the one mapping to an HTTP status and the
//! contract's error envelope `{"code": <non-zero>, "message": "..."}`.

use realmq_raft_store::read::ReadError;
use realmq_raft_store::{Rejection, WriteError};
use serde_json::json;
use warp::http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than this server accepts (see [api] max_body)")]
    PayloadTooLarge,
    /// Too many failed logins or password checks; `retry_after` seconds until the next try.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope's `code`: the HTTP status, which is never 0.
    pub fn code(&self) -> u16 {
        self.status().as_u16()
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"code": self.code(), "message": self.to_string()})
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        tracing::error!(error = %e, "registry read failed");
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::context::OpError> for ApiError {
    fn from(e: crate::context::OpError) -> Self {
        match e {
            crate::context::OpError::NotFound(m) => ApiError::NotFound(m),
            crate::context::OpError::Invalid(m) => ApiError::BadRequest(m),
            crate::context::OpError::Denied(m) => ApiError::Forbidden(m),
            crate::context::OpError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Internal(m) => ApiError::Internal(m),
            // "Try again later" for a client; the message says why.
            WriteError::NoQuorum(_) | WriteError::Unavailable(_) => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::NotFound { .. } => ApiError::NotFound(r.to_string()),
            Rejection::AlreadyExists { .. } | Rejection::Invalid { .. } => {
                ApiError::BadRequest(r.to_string())
            }
        }
    }
}

/// The error envelope's schema, for the OpenAPI document. Every error: a non-zero `code` (the HTTP status) and a message naming what is wrong.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    code: i64,
    message: String,
}
