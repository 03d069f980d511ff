//! The one mapping of kiln's errors to GraphQL errors with an `extensions.code`.
//!
//! Codes: `BAD_USER_INPUT` (with `extensions.field`), `NOT_FOUND`, `CONFLICT`, `UNAUTHENTICATED`,
//! `FORBIDDEN`, `PAYLOAD_TOO_LARGE` (a size limit, with `extensions.field`), `FAILED_PRECONDITION` (a rule the user set refuses it, with `extensions.failedRules`;
//! or a registered version whose stored files are gone), `RESOURCE_EXHAUSTED` (the server's memory
//! for predictions stayed taken for the wait allowed; try again), `UNAVAILABLE` (the database cannot be
//! reached; try again), `INTERNAL_SERVER_ERROR`. Internal errors are logged with their whole chain and
//! answered with a reference only, never with their text.

use std::sync::Arc;

use crate::domain::FieldError;
use crate::service::ServiceError;

/// Deliberately not `Display`: that keeps async-graphql's blanket conversion from any displayable error
/// away, so every error reaches the client through [`From<ApiError>`] below.
#[derive(Debug, Clone)]
pub enum ApiError {
    BadInput {
        field: String,
        message: String,
    },
    NotFound(String),
    Conflict(String),
    Unauthenticated(String),
    Forbidden(String),
    FailedPrecondition {
        message: String,
        failed: Vec<String>,
    },
    /// Larger than a limit allows (`PAYLOAD_TOO_LARGE`, with the field).
    TooLarge {
        field: String,
        message: String,
    },
    /// The server is too busy right now (its memory for predictions).
    Busy(String),
    /// A dependency (the database) cannot be reached right now.
    Unavailable,
    Internal(Arc<anyhow::Error>),
}

impl ApiError {
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(Arc::new(e.into()))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadInput {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadInput(e) => e.into(),
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::FailedPrecondition { message, failed } => {
                Self::FailedPrecondition { message, failed }
            }
            ServiceError::Lost(message) => Self::FailedPrecondition {
                message,
                failed: vec![],
            },
            ServiceError::Busy(m) => Self::Busy(m),
            ServiceError::TooLarge(e) => Self::TooLarge {
                field: e.field,
                message: e.message,
            },
            ServiceError::Unavailable => Self::Unavailable,
            ServiceError::Internal(e) => Self::Internal(Arc::new(e)),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(Arc::new(e))
    }
}

impl From<async_graphql::Error> for ApiError {
    fn from(e: async_graphql::Error) -> Self {
        Self::internal(anyhow::anyhow!(e.message))
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        let mut failed_rules = None;
        let (code, message, field) = match e {
            ApiError::BadInput { field, message } => {
                ("BAD_USER_INPUT", format!("{field}: {message}"), Some(field))
            }
            ApiError::NotFound(m) => ("NOT_FOUND", m, None),
            ApiError::Conflict(m) => ("CONFLICT", m, None),
            ApiError::Unauthenticated(m) => ("UNAUTHENTICATED", m, None),
            ApiError::Forbidden(m) => ("FORBIDDEN", m, None),
            ApiError::FailedPrecondition { message, failed } => {
                failed_rules = (!failed.is_empty()).then_some(failed);
                ("FAILED_PRECONDITION", message, None)
            }
            ApiError::TooLarge { field, message } => (
                "PAYLOAD_TOO_LARGE",
                format!("{field}: {message}"),
                Some(field),
            ),
            ApiError::Busy(m) => ("RESOURCE_EXHAUSTED", m, None),
            ApiError::Unavailable => (
                "UNAVAILABLE",
                "the database cannot be reached right now; try again in a moment".to_string(),
                None,
            ),
            ApiError::Internal(e) => {
                let reference = uuid::Uuid::new_v4();
                let trace = crate::telemetry::current_trace_id();
                tracing::error!(error = format!("{e:#}"), %reference, trace_id = trace.as_deref(), "internal error");
                (
                    "INTERNAL_SERVER_ERROR",
                    match trace {
                        Some(trace) => format!(
                            "internal error (reference {reference}, trace {trace}); see the server \
                             log or the trace"
                        ),
                        None => {
                            format!("internal error (reference {reference}); see the server log")
                        }
                    },
                    None,
                )
            }
        };
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(field) = &field {
                ext.set("field", field.as_str());
            }
            if let Some(failed) = &failed_rules {
                ext.set("failedRules", failed.clone());
            }
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
