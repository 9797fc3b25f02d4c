//! `berth-oci` is the vocabulary every other berth crate speaks: content
//! digests and their streaming verification, image references and the
//! distribution-spec name grammar, media types, manifests and indexes (on top
//! of `oci-spec`), OCI image-layout directories, and the distribution error
//! codes. It knows nothing of HTTP servers, SQLite or S3.
//!
//! # Layout
//! - [`digest`]: `Digest`, `Algorithm`, `Hasher`, `Verifier`, `VerifyingReader`.
//! - [`reference`]: `Reference`, `validate_name`, `validate_tag`.
//! - [`media_type`]: media type constants and predicates.
//! - [`manifest`]: `Manifest::parse` and what a manifest references.
//! - [`layout`]: `ImageLayout`, an OCI image-layout directory.
//! - [`error`]: `ErrorCode` and the error JSON body.
//! - [`distribution`]: the protocol pieces every server and client shares:
//!   `/v2` path routing, `Range`, `WWW-Authenticate` challenges, the
//!   manifest `Accept` list, the push webhook and its signature.
//! - [`log`]: the `[log]` settings every server's config file shares.
//! - [`retry`]: the backoff policy of berth's clients.
//! - `client` (the `client` feature): the registry client (push with HEAD-skip, cross-repository
//!   mount, parallel uploads, retries, Basic and Bearer auth) — the only
//!   module that does network I/O.

#[cfg(feature = "client")]
pub mod client;
pub mod digest;
pub mod distribution;
pub mod error;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod media_type;
pub mod reference;
pub mod retry;
pub mod units;

pub use digest::{Algorithm, Digest, DigestError, Hasher, Verifier, VerifyingReader};
pub use error::{ErrorCode, ErrorInfo, ErrorResponse};
pub use layout::ImageLayout;
pub use manifest::{ContentRef, Manifest, ManifestError};
pub use reference::{Reference, ReferenceError, validate_name, validate_tag};

/// Re-export of the `oci-spec` image types berth builds on.
pub use oci_spec::image as spec;
