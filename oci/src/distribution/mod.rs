//! The distribution protocol as both servers (`berth serve`, `berth
//! mirror`) and every client (the push client, the mirror's upstream, the
//! bumper) speak it, written once: the `/v2/<name>/<endpoint>/<ref>` path
//! parser, the `Range` header, `WWW-Authenticate` challenges, the manifest
//! `Accept` list, and the push webhook with its signature. Pure parsing and
//! formatting: no sockets, no HTTP framework types.
//!
//! # Layout
//! - [`route`]: `/v2/...` paths → [`Route`], names and references
//!   validated.
//! - [`range`]: the `Range` header → a byte range, whole, or 416.
//! - [`challenge`]: `WWW-Authenticate` → [`Challenge`]s.
//! - [`webhook`]: the `PUSH_ARTIFACT` payload, signing and verification.

pub mod challenge;
pub mod range;
pub mod route;
pub mod webhook;

pub use challenge::{Challenge, challenge, parse_challenges};
pub use range::{Unsatisfiable, content_range, parse_range};
pub use route::{ManifestRef, Route, RouteError};

/// The `Accept` header of every manifest request a berth client sends:
/// the manifest types a registry stores, indexes first (so a
/// multi-architecture tag resolves to its index).
/// (Spelled out, since `concat!` takes literals only; a test keeps it equal
/// to `media_type::MANIFEST_TYPES`.)
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn accept_lists_the_stored_manifest_types_indexes_first() {
        assert_eq!(
            MANIFEST_ACCEPT,
            [
                OCI_INDEX,
                OCI_MANIFEST,
                DOCKER_MANIFEST_LIST,
                DOCKER_MANIFEST
            ]
            .join(", ")
        );
        assert_eq!(
            MANIFEST_ACCEPT,
            crate::media_type::MANIFEST_TYPES.join(", ")
        );
    }
}
