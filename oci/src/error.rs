//! The distribution-spec error codes as an enum, with the HTTP status each
//! one is returned with, and the error JSON body
//! (`{"errors":[{"code","message","detail"}]}`) that registries send and
//! clients parse. Servers map their own errors to these once, at the edge.
//! Also how a Rust error chain is told in one line ([`error_chain`],
//! [`root_cause`]).

use serde::{Deserialize, Serialize};

/// An error code from the OCI distribution spec (plus the few extension
/// codes that the CNCF distribution implementation also returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    /// Extension: the tag is invalid (distribution's `TAG_INVALID`).
    TagInvalid,
    /// Extension: the `n` query parameter is out of bounds.
    PaginationNumberInvalid,
    /// Extension: an internal server error.
    Unknown,
    /// Extension (berth): the registry's storage is full, or below its
    /// free-space floor; nothing past what was acknowledged was kept.
    InsufficientStorage,
    /// Extension (as distribution's `UNAVAILABLE`): a service the registry
    /// needs (its metadata database, its blob store) does not answer now;
    /// nothing was half-written, and the request may be retried.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status the spec (or the reference implementation) pairs with
    /// this code.
    pub const fn status(self) -> u16 {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => 404,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid
            | Self::TagInvalid
            | Self::PaginationNumberInvalid => 400,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 405,
            Self::TooManyRequests => 429,
            Self::Unknown => 500,
            Self::InsufficientStorage => 507,
            Self::Unavailable => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::TagInvalid => "TAG_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unknown => "UNKNOWN",
            Self::InsufficientStorage => "INSUFFICIENT_STORAGE",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One entry of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// The body of every distribution API error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// One or more errors.
    pub errors: Vec<ErrorInfo>,
}

impl ErrorResponse {
    /// A response with a single error.
    pub fn single(
        code: ErrorCode,
        message: impl Into<String>,
        detail: Option<serde_json::Value>,
    ) -> Self {
        Self {
            errors: vec![ErrorInfo {
                code,
                message: message.into(),
                detail,
            }],
        }
    }
}

/// The innermost source of `e` (`e` itself when it has none): what an
/// operator can act on ("connection refused"), under layers that say
/// nothing more.
pub fn root_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last
}

/// An error and its root cause, on one line (reqwest and the AWS SDK leave
/// the cause to their error's sources; the layers between say nothing a
/// user can act on).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let root = root_cause(e);
    if std::ptr::addr_eq(root, e) {
        e.to_string()
    } else {
        format!("{e}: {root}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_spec_strings() {
        for code in [
            ErrorCode::BlobUnknown,
            ErrorCode::BlobUploadInvalid,
            ErrorCode::BlobUploadUnknown,
            ErrorCode::DigestInvalid,
            ErrorCode::ManifestBlobUnknown,
            ErrorCode::ManifestInvalid,
            ErrorCode::ManifestUnknown,
            ErrorCode::NameInvalid,
            ErrorCode::NameUnknown,
            ErrorCode::SizeInvalid,
            ErrorCode::Unauthorized,
            ErrorCode::Denied,
            ErrorCode::Unsupported,
            ErrorCode::TooManyRequests,
            ErrorCode::TagInvalid,
            ErrorCode::PaginationNumberInvalid,
            ErrorCode::Unknown,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn body_shape() {
        let body = ErrorResponse::single(ErrorCode::BlobUnknown, "blob unknown to registry", None);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
        );
        assert_eq!(ErrorCode::ManifestUnknown.status(), 404);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
    }
}
