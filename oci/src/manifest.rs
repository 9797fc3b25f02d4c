//! Manifests and indexes on top of `oci-spec`: parsing a pushed document of
//! any supported type (OCI or Docker v2 schema 2, image or index), checking
//! that its declared type is consistent, and listing what it references
//! (config and layer blobs, child manifests, subject) so a registry can check
//! that they exist and a client can walk an image.
//!
//! This module never hashes or stores anything; the caller owns the bytes.

/// The layer annotation berth's builder lists a layer's Nix store paths in
/// (newline-separated); the registry's web UI shows them.
pub const STORE_PATHS_ANNOTATION: &str = "io.berth.store-paths";
/// The layer annotation that records the compressor id.
pub const COMPRESSOR_ANNOTATION: &str = "io.berth.compressor";

use std::collections::HashMap;

use oci_spec::image::{Descriptor as SpecDescriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::{Digest, DigestError};
use crate::media_type::{self, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED};

/// Why a document is not an acceptable manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the shape of its type.
    #[error("manifest is not valid {kind}: {source}")]
    Json {
        /// What it was parsed as.
        kind: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A schema 1 manifest (deprecated and refused).
    #[error("Docker schema 1 manifests are not supported; push an OCI or Docker schema 2 manifest")]
    Schema1,
    /// `schemaVersion` is not 2.
    #[error("manifest schemaVersion is {0}; only 2 is supported")]
    SchemaVersion(u64),
    /// The body's `mediaType` and the request's `Content-Type` disagree.
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch {
        /// The `mediaType` field.
        body: String,
        /// The `Content-Type` header.
        header: String,
    },
    /// Neither the document nor the request says what it is, or it is not a
    /// manifest type berth stores.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// A descriptor's digest is not one berth can verify.
    #[error("manifest references an unusable digest: {0}")]
    Digest(#[from] DigestError),
}

/// A reference from a manifest to other content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    /// The referenced content's digest.
    pub digest: Digest,
    /// Its declared size.
    pub size: u64,
    /// Its declared media type.
    pub media_type: String,
    /// Where a non-distributable ("foreign") layer can be fetched from; such
    /// a layer need not be pushed to the registry.
    pub urls: Vec<String>,
}

/// A parsed manifest or index, with the media type it is stored under.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An image manifest (OCI or Docker schema 2).
    Image {
        /// The media type it is stored and served as.
        media_type: String,
        /// The parsed document.
        manifest: ImageManifest,
    },
    /// An index or Docker manifest list.
    Index {
        /// The media type it is stored and served as.
        media_type: String,
        /// The parsed document.
        index: ImageIndex,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u64>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

fn content_ref(d: &SpecDescriptor) -> Result<ContentRef, ManifestError> {
    Ok(ContentRef {
        digest: d.digest().try_into()?,
        size: d.size(),
        media_type: d.media_type().to_string(),
        urls: d.urls().clone().unwrap_or_default(),
    })
}

impl Manifest {
    /// Parse a manifest body. `content_type` is the request's `Content-Type`
    /// when there is one; it must agree with the body's `mediaType` if both
    /// are present, and decides the type when the body has none.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        let probe: Probe = serde_json::from_slice(body).map_err(|source| ManifestError::Json {
            kind: "JSON",
            source,
        })?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        if matches!(
            probe.media_type.as_deref(),
            Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
        ) || matches!(header, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED))
            || probe.schema_version == Some(1)
        {
            return Err(ManifestError::Schema1);
        }
        match probe.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::SchemaVersion(0)),
        }
        let media_type = match (probe.media_type.as_deref(), header) {
            (Some(body), Some(header)) if body != header => {
                return Err(ManifestError::MediaTypeMismatch {
                    body: body.to_owned(),
                    header: header.to_owned(),
                });
            }
            (Some(t), _) => t.to_owned(),
            // A header that is not a manifest type (a client sending
            // `application/json`, say) is no better than none at all.
            (None, Some(h)) if media_type::MANIFEST_TYPES.contains(&h) => h.to_owned(),
            (None, _) if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            (None, _) if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
            (None, h) => {
                return Err(ManifestError::UnsupportedMediaType(
                    h.unwrap_or("").to_owned(),
                ));
            }
        };
        let parsed = if media_type::is_image_manifest(&media_type) {
            let manifest: ImageManifest =
                serde_json::from_slice(body).map_err(|source| ManifestError::Json {
                    kind: "image manifest",
                    source,
                })?;
            Self::Image {
                media_type,
                manifest,
            }
        } else if media_type::is_index(&media_type) {
            let index: ImageIndex =
                serde_json::from_slice(body).map_err(|source| ManifestError::Json {
                    kind: "image index",
                    source,
                })?;
            Self::Index { media_type, index }
        } else {
            return Err(ManifestError::UnsupportedMediaType(media_type));
        };
        // Every digest must be one berth can check.
        parsed.blobs()?;
        parsed.children()?;
        parsed.subject()?;
        Ok(parsed)
    }

    /// The media type the manifest is stored and served as.
    pub fn media_type(&self) -> &str {
        match self {
            Self::Image { media_type, .. } | Self::Index { media_type, .. } => media_type,
        }
    }

    /// Blobs the manifest references: the config, then the layers (an index
    /// references none).
    pub fn blobs(&self) -> Result<Vec<ContentRef>, ManifestError> {
        match self {
            Self::Image { manifest, .. } => std::iter::once(manifest.config())
                .chain(manifest.layers())
                .map(content_ref)
                .collect(),
            Self::Index { .. } => Ok(Vec::new()),
        }
    }

    /// Child manifests an index references (an image manifest has none).
    pub fn children(&self) -> Result<Vec<ContentRef>, ManifestError> {
        match self {
            Self::Image { .. } => Ok(Vec::new()),
            Self::Index { index, .. } => index.manifests().iter().map(content_ref).collect(),
        }
    }

    /// The `subject` descriptor, if the manifest refers to another one.
    pub fn subject(&self) -> Result<Option<ContentRef>, ManifestError> {
        let subject = match self {
            Self::Image { manifest, .. } => manifest.subject().as_ref(),
            Self::Index { index, .. } => index.subject().as_ref(),
        };
        subject.map(content_ref).transpose()
    }

    /// The artifact type the referrers API reports: `artifactType`, or for
    /// an image manifest without one, its config's media type.
    pub fn artifact_type(&self) -> Option<String> {
        match self {
            Self::Image { manifest, .. } => Some(manifest.artifact_type().as_ref().map_or_else(
                || manifest.config().media_type().to_string(),
                |t| t.to_string(),
            )),
            Self::Index { index, .. } => index.artifact_type().as_ref().map(|t| t.to_string()),
        }
    }

    /// The manifest's annotations.
    pub fn annotations(&self) -> Option<&HashMap<String, String>> {
        match self {
            Self::Image { manifest, .. } => manifest.annotations().as_ref(),
            Self::Index { index, .. } => index.annotations().as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::*;

    fn d(s: &str) -> String {
        Digest::sha256(s.as_bytes()).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":2}},
               "layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{}","size":3}}]}}"#,
            d("c"),
            d("l")
        )
    }

    #[test]
    fn image_manifest_refs() {
        let body = image(&format!(r#""mediaType":"{OCI_MANIFEST}","#));
        let m = Manifest::parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type(), OCI_MANIFEST);
        let blobs = m.blobs().unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].digest.to_string(), d("c"));
        assert_eq!(blobs[1].size, 3);
        assert!(m.children().unwrap().is_empty());
        assert_eq!(m.artifact_type().as_deref(), Some(OCI_CONFIG));
    }

    #[test]
    fn media_type_resolution_table() {
        let no_type = image("");
        let typed = image(&format!(r#""mediaType":"{DOCKER_MANIFEST}","#));
        let cases: Vec<(&str, Option<&str>, Result<&str, &str>)> = vec![
            (&no_type, None, Ok(OCI_MANIFEST)),
            (&no_type, Some(DOCKER_MANIFEST), Ok(DOCKER_MANIFEST)),
            (&no_type, Some("application/json"), Ok(OCI_MANIFEST)),
            (&typed, None, Ok(DOCKER_MANIFEST)),
            (&typed, Some(DOCKER_MANIFEST), Ok(DOCKER_MANIFEST)),
            (&typed, Some(OCI_MANIFEST), Err("does not match")),
            (r#"{"schemaVersion":1,"name":"x"}"#, None, Err("schema 1")),
            (
                r#"{"schemaVersion":3,"config":{}}"#,
                None,
                Err("schemaVersion is 3"),
            ),
            (r#"{"config":{}}"#, None, Err("schemaVersion is 0")),
            ("not json", None, Err("not valid JSON")),
            (
                r#"{"schemaVersion":2}"#,
                None,
                Err("unsupported manifest media type"),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                None,
                Err("not valid image manifest"),
            ),
        ];
        for (body, header, want) in cases {
            match (Manifest::parse(body.as_bytes(), header), want) {
                (Ok(m), Ok(t)) => assert_eq!(m.media_type(), t, "{body}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{body}: {e}"),
                (got, want) => panic!("{body} {header:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn index_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"application/x.sig",
                "manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10,
                               "platform":{{"architecture":"amd64","os":"linux"}}}}],
                "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}}}"#,
            d("child"),
            d("subject")
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.children().unwrap()[0].digest.to_string(), d("child"));
        assert_eq!(
            m.subject().unwrap().unwrap().digest.to_string(),
            d("subject")
        );
        assert_eq!(m.artifact_type().as_deref(), Some("application/x.sig"));
        assert!(m.blobs().unwrap().is_empty());
    }

    #[test]
    fn unverifiable_digest_is_refused() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"sha384:{}","size":2}},"layers":[]}}"#,
            "a".repeat(96)
        );
        assert!(matches!(
            Manifest::parse(body.as_bytes(), None),
            Err(ManifestError::Digest(_))
        ));
    }
}
