//! [`ApiError`], the one error type of the HTTP edge: each variant keeps its
//! cause, and [`IntoResponse`] maps it once to a status and the OCI error
//! JSON. Internal failures are logged here, once, with their cause, and reach
//! the client as `UNKNOWN` without internals.

use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorCode, ErrorResponse};
use http::{HeaderValue, StatusCode, header};

use crate::metadata::MetadataError;
use crate::storage::StorageError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error with a distribution error code.
    #[error("{code:?}: {message}")]
    Oci {
        /// The code.
        code: ErrorCode,
        /// The status, when it differs from the code's usual one.
        status: StatusCode,
        /// A message for the client.
        message: String,
        /// Structured detail.
        detail: Option<serde_json::Value>,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The blob store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ApiError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Oci {
            code,
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            message: message.into(),
            detail: None,
        }
    }

    /// Override the status (e.g. 416 for a bad range, 413 for a large body).
    pub fn with_status(self, status: StatusCode) -> Self {
        match self {
            Self::Oci {
                code,
                message,
                detail,
                ..
            } => Self::Oci {
                code,
                status,
                message,
                detail,
            },
            other => other,
        }
    }

    /// Attach structured detail.
    pub fn with_detail(self, detail: serde_json::Value) -> Self {
        match self {
            Self::Oci {
                code,
                status,
                message,
                ..
            } => Self::Oci {
                code,
                status,
                message,
                detail: Some(detail),
            },
            other => other,
        }
    }
}

impl From<berth_oci::distribution::RouteError> for ApiError {
    fn from(e: berth_oci::distribution::RouteError) -> Self {
        let err = Self::new(e.code, e.message);
        if e.code == ErrorCode::NameUnknown {
            err.with_status(StatusCode::NOT_FOUND)
        } else {
            err
        }
    }
}

/// 507 for a full disk: the cause, what was kept, what to do.
fn disk_full(cause: &str) -> (StatusCode, ErrorResponse) {
    (
        StatusCode::INSUFFICIENT_STORAGE,
        ErrorResponse::single(
            ErrorCode::InsufficientStorage,
            format!(
                "the registry's disk is full ({cause}): nothing past what was acknowledged was kept; an upload session resumes where it stopped once space is freed (berth admin gc, retention)"
            ),
            None,
        ),
    )
}

/// Whether SQLite failed for want of disk space.
fn sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Oci {
                code,
                status,
                message,
                detail,
            } => (status, ErrorResponse::single(code, message, detail)),
            Self::Metadata(crate::metadata::MetadataError::Missing { digest }) => (
                StatusCode::BAD_REQUEST,
                ErrorResponse::single(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "manifest references {digest}, which is not in this repository (or has another size): push it first"
                    ),
                    Some(serde_json::json!({ "digest": digest })),
                ),
            ),
            Self::Metadata(e @ crate::metadata::MetadataError::Immutable { .. }) => (
                StatusCode::FORBIDDEN,
                ErrorResponse::single(ErrorCode::Denied, e.to_string(), None),
            ),
            Self::Storage(StorageError::Io(e)) if crate::storage::disk_full(&e) => {
                tracing::error!(error = %e, "the blob store's disk is full");
                disk_full(&e.to_string())
            }
            Self::Metadata(crate::metadata::MetadataError::Sqlite(e)) if sqlite_full(&e) => {
                tracing::error!(error = %e, "the metadata database's disk is full");
                disk_full(&e.to_string())
            }
            Self::Storage(e @ StorageError::Unresumable { .. }) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorResponse::single(ErrorCode::BlobUploadInvalid, e.to_string(), None),
            ),
            Self::Metadata(crate::metadata::MetadataError::Unavailable(why)) => {
                tracing::error!(error = %why, "metadata database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorResponse::single(
                        ErrorCode::Unavailable,
                        "the metadata database is unavailable; try again (nothing was half-written, and an upload session stays resumable)",
                        None,
                    ),
                )
            }
            Self::Storage(StorageError::Unavailable(why)) => {
                tracing::error!(error = %why, "blob storage unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorResponse::single(
                        ErrorCode::Unknown,
                        "blob storage is unavailable; try again (an upload session stays resumable)",
                        None,
                    ),
                )
            }
            internal => {
                tracing::error!(error = %internal, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorResponse::single(
                        ErrorCode::Unknown,
                        "internal server error; see the registry log",
                        None,
                    ),
                )
            }
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
