//! The pure parser from a `/v2/...` path to a [`Route`]: which endpoint, for
//! which repository, with which reference. Repository names may have any
//! number of components (even ones such as `blobs` or `manifests`), so the
//! endpoint is recognised from the end of the path. Names, tags and digests
//! are validated here, before anything else sees them. Both servers (the
//! registry and the node mirror) route with it; neither has another.

use crate::{Digest, ErrorCode, validate_name, validate_tag};

/// How a manifest is named in a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

/// A distribution API endpoint, with its validated parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository.
        name: String,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        name: String,
        /// Tag or digest.
        reference: ManifestRef,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        name: String,
        /// Blob digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`: start an upload or mount.
    UploadStart {
        /// Repository.
        name: String,
    },
    /// `/v2/<name>/blobs/uploads/<id>`: an upload session. The id is kept
    /// as given; an id that is not a UUID is an unknown upload.
    Upload {
        /// Repository.
        name: String,
        /// Session id as it appeared in the path.
        id: String,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository.
        name: String,
        /// Subject digest.
        digest: Digest,
    },
}

/// Why a path does not name an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The error code to answer with.
    pub code: ErrorCode,
    /// A message for the client.
    pub message: String,
}

impl RouteError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn name(segs: &[&str]) -> Result<String, RouteError> {
    let n = segs.join("/");
    validate_name(&n).map_err(|e| RouteError::new(ErrorCode::NameInvalid, e.to_string()))?;
    Ok(n)
}

fn digest(s: &str) -> Result<Digest, RouteError> {
    s.parse()
        .map_err(|e: crate::DigestError| RouteError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// Parse the part of a path after `/v2/` (so `library/alpine/manifests/3`).
pub fn parse(rest: &str) -> Result<Route, RouteError> {
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return Err(RouteError::new(
            ErrorCode::NameInvalid,
            format!("path /v2/{rest} has a '.' or '..' component"),
        ));
    }
    let n = segs.len();
    let not_found =
        || RouteError::new(ErrorCode::NameUnknown, format!("no endpoint at /v2/{rest}"));
    // `<name>/blobs/uploads/` and `<name>/blobs/uploads`.
    if n >= 3 && segs[n - 1].is_empty() && segs[n - 2] == "uploads" && segs[n - 3] == "blobs" {
        return Ok(Route::UploadStart {
            name: name(&segs[..n - 3])?,
        });
    }
    if n >= 3 && segs[n - 1] == "uploads" && segs[n - 2] == "blobs" {
        return Ok(Route::UploadStart {
            name: name(&segs[..n - 2])?,
        });
    }
    if n >= 4 && segs[n - 2] == "uploads" && segs[n - 3] == "blobs" {
        return Ok(Route::Upload {
            name: name(&segs[..n - 3])?,
            id: segs[n - 1].to_owned(),
        });
    }
    if n < 3 {
        return Err(not_found());
    }
    let (head, kind, last) = (&segs[..n - 2], segs[n - 2], segs[n - 1]);
    match kind {
        "tags" if last == "list" => Ok(Route::Tags { name: name(head)? }),
        "manifests" => {
            let name = name(head)?;
            let reference = if last.contains(':') {
                ManifestRef::Digest(digest(last)?)
            } else {
                validate_tag(last)
                    .map_err(|e| RouteError::new(ErrorCode::TagInvalid, e.to_string()))?;
                ManifestRef::Tag(last.to_owned())
            };
            Ok(Route::Manifest { name, reference })
        }
        "blobs" => Ok(Route::Blob {
            name: name(head)?,
            digest: digest(last)?,
        }),
        "referrers" => Ok(Route::Referrers {
            name: name(head)?,
            digest: digest(last)?,
        }),
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn dg() -> Digest {
        D.parse().unwrap()
    }

    #[test]
    fn table() {
        let ok: Vec<(String, Route)> = vec![
            ("".into(), Route::Base),
            ("_catalog".into(), Route::Catalog),
            ("a/tags/list".into(), Route::Tags { name: "a".into() }),
            (
                "a/b/c/d/tags/list".into(),
                Route::Tags {
                    name: "a/b/c/d".into(),
                },
            ),
            (
                "library/alpine/manifests/3.20".into(),
                Route::Manifest {
                    name: "library/alpine".into(),
                    reference: ManifestRef::Tag("3.20".into()),
                },
            ),
            (
                format!("x/manifests/{D}"),
                Route::Manifest {
                    name: "x".into(),
                    reference: ManifestRef::Digest(dg()),
                },
            ),
            (
                format!("a/blobs/{D}"),
                Route::Blob {
                    name: "a".into(),
                    digest: dg(),
                },
            ),
            // Endpoint words are fine as name components.
            (
                format!("blobs/manifests/tags/blobs/{D}"),
                Route::Blob {
                    name: "blobs/manifests/tags".into(),
                    digest: dg(),
                },
            ),
            (
                "manifests/manifests/manifests".into(),
                Route::Manifest {
                    name: "manifests".into(),
                    reference: ManifestRef::Tag("manifests".into()),
                },
            ),
            (
                "a/b/blobs/uploads/".into(),
                Route::UploadStart { name: "a/b".into() },
            ),
            (
                "a/b/blobs/uploads".into(),
                Route::UploadStart { name: "a/b".into() },
            ),
            (
                "a/blobs/uploads/0f0e4b3c-1a2b-4c5d-8e9f-001122334455".into(),
                Route::Upload {
                    name: "a".into(),
                    id: "0f0e4b3c-1a2b-4c5d-8e9f-001122334455".into(),
                },
            ),
            (
                format!("a/referrers/{D}"),
                Route::Referrers {
                    name: "a".into(),
                    digest: dg(),
                },
            ),
        ];
        for (path, want) in ok {
            assert_eq!(parse(&path), Ok(want), "{path}");
        }

        let bad: Vec<(String, ErrorCode)> = vec![
            ("a".into(), ErrorCode::NameUnknown),
            ("a/b".into(), ErrorCode::NameUnknown),
            ("a/b/c".into(), ErrorCode::NameUnknown),
            ("a/tags/other".into(), ErrorCode::NameUnknown),
            ("../etc/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a/../b/manifests/latest".into(), ErrorCode::NameInvalid),
            ("UPPER/manifests/latest".into(), ErrorCode::NameInvalid),
            ("/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a//b/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a/manifests/.bad".into(), ErrorCode::TagInvalid),
            ("a/manifests/".into(), ErrorCode::TagInvalid),
            ("a/manifests/sha256:abc".into(), ErrorCode::DigestInvalid),
            ("a/blobs/latest".into(), ErrorCode::DigestInvalid),
            ("a/blobs/sha256:../../x".into(), ErrorCode::NameInvalid),
            (
                "a/blobs/sha256:..%2f..%2fx".into(),
                ErrorCode::DigestInvalid,
            ),
            ("a/referrers/nope".into(), ErrorCode::DigestInvalid),
            (
                format!("{}/tags/list", "a".repeat(300)),
                ErrorCode::NameInvalid,
            ),
        ];
        for (path, code) in bad {
            assert_eq!(parse(&path).map_err(|e| e.code), Err(code), "{path}");
        }
    }
}
