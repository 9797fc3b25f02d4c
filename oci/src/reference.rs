//! Image references (`host[:port]/repo[:tag][@digest]`) and the distribution
//! spec's grammars for repository names and tags, with Docker Hub
//! normalisation (`alpine` → `docker.io/library/alpine`).
//!
//! The validators here are what every other crate calls before a name or tag
//! becomes a path, an object key or a SQL value. This module does no I/O.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The longest repository name accepted (the distribution implementation's
/// limit, which also bounds `host/name` for clients).
pub const MAX_NAME_LEN: usize = 255;
/// The longest tag accepted (the distribution spec's tag grammar).
pub const MAX_TAG_LEN: usize = 128;
/// Docker Hub's canonical registry host.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a reference, name or tag was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The repository name breaks the distribution-spec grammar.
    #[error(
        "invalid repository name {0:?}: use lowercase path components [a-z0-9] separated by '/', joined inside by '.', '_', '__' or '-'"
    )]
    InvalidName(String),
    /// The repository name is longer than [`MAX_NAME_LEN`].
    #[error("repository name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong(usize),
    /// The tag breaks `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}: use up to 128 of [A-Za-z0-9._-], not starting with '.' or '-'")]
    InvalidTag(String),
    /// The registry host part is malformed.
    #[error("invalid registry host {0:?}")]
    InvalidHost(String),
    /// The digest part is malformed.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Nothing to parse.
    #[error("empty image reference")]
    Empty,
    /// A URL where a reference belongs.
    #[error(
        "{0:?} is a URL; an image reference has no scheme: write {1} (loopback registries are always asked over plain HTTP; --plain-http for others)"
    )]
    Url(String, String),
}

/// True if `c` is one path component of a repository name:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn name_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    loop {
        // One run of [a-z0-9]+.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator: '.', '_', '__' or '-'+.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Validate a repository name (the `<name>` of `/v2/<name>/...`), of any
/// depth, against the distribution-spec grammar and length limit.
pub fn validate_name(name: &str) -> Result<(), ReferenceError> {
    if name.len() > MAX_NAME_LEN {
        return Err(ReferenceError::NameTooLong(name.len()));
    }
    if name.is_empty() || !name.split('/').all(name_component_ok) {
        return Err(ReferenceError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Validate a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
    let rest_ok = b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && b.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_owned()))
    }
}

fn host_ok(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || n.starts_with('[') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A parsed image reference: registry, repository, and a tag, a digest or
/// both. Docker Hub references are normalised (`docker.io`, `library/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest if pinned, else the tag,
    /// else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// A copy pinned to `digest`, keeping the tag.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some((_, rest)) = s
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https" | "docker" | "oci"))
        {
            return Err(ReferenceError::Url(s.to_owned(), rest.to_owned()));
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag is a ':' after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (rest, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                validate_tag(t)?;
                (&rest[..last_slash + i], Some(t.to_owned()))
            }
            None => (rest, None),
        };
        // The first component is a host if it looks like one (Docker's rule).
        let (registry, mut repository) = match rest.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                if !host_ok(first) {
                    return Err(ReferenceError::InvalidHost(first.to_owned()));
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), rest.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        validate_name(&repository)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong(
                registry.len() + 1 + repository.len(),
            ));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_refused_with_the_reference_to_write() {
        let e = "http://127.0.0.1:5000/team/app:v1"
            .parse::<Reference>()
            .unwrap_err();
        assert!(
            e.to_string().contains("write 127.0.0.1:5000/team/app:v1"),
            "{e}"
        );
        assert!(matches!(
            "docker://ghcr.io/a/b:1".parse::<Reference>(),
            Err(ReferenceError::Url(..))
        ));
    }

    #[test]
    fn name_table() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("library/alpine", true),
            ("a/b/c/d/e/f/g", true),
            ("my-app", true),
            ("my--app", true),
            ("my__app", true),
            ("my_app.v2", true),
            ("0", true),
            ("", false),
            ("A", false),
            ("a//b", false),
            ("/a", false),
            ("a/", false),
            ("a/../b", false),
            ("..", false),
            ("a___b", false),
            ("-a", false),
            ("a-", false),
            ("a._b", false),
            ("a b", false),
            ("a%2fb", false),
            (&long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_name(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn tag_table() {
        let long = "t".repeat(129);
        for (tag, ok) in [
            ("latest", true),
            ("v1.2.3-rc_1", true),
            ("_x", true),
            ("A", true),
            (".x", false),
            ("-x", false),
            ("", false),
            ("a/b", false),
            ("a:b", false),
            (long.as_str(), false),
        ] {
            assert_eq!(validate_tag(tag).is_ok(), ok, "{tag:?}");
        }
    }

    #[test]
    fn reference_table() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: Vec<(String, &str, &str, Option<&str>, bool)> = vec![
            ("alpine".into(), "docker.io", "library/alpine", None, false),
            (
                "alpine:3.20".into(),
                "docker.io",
                "library/alpine",
                Some("3.20"),
                false,
            ),
            ("org/app:1".into(), "docker.io", "org/app", Some("1"), false),
            (
                "index.docker.io/org/app".into(),
                "docker.io",
                "org/app",
                None,
                false,
            ),
            (
                "127.0.0.1:5000/a/b/c:t".into(),
                "127.0.0.1:5000",
                "a/b/c",
                Some("t"),
                false,
            ),
            ("localhost/x".into(), "localhost", "x", None, false),
            (
                "localhost:5000/x:y".into(),
                "localhost:5000",
                "x",
                Some("y"),
                false,
            ),
            (
                "ghcr.io/org/app:1.4".into(),
                "ghcr.io",
                "org/app",
                Some("1.4"),
                false,
            ),
            (
                format!("ghcr.io/org/app@{d}"),
                "ghcr.io",
                "org/app",
                None,
                true,
            ),
            (
                format!("ghcr.io/org/app:v1@{d}"),
                "ghcr.io",
                "org/app",
                Some("v1"),
                true,
            ),
            ("[::1]:5000/x".into(), "[::1]:5000", "x", None, false),
        ];
        for (input, reg, repo, tag, has_digest) in cases {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), reg, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), has_digest, "{input}");
        }
        for bad in [
            "",
            "UPPER",
            "ghcr.io/Org/app",
            "a:b:c",
            "ghcr.io/app:",
            "ghcr.io/app@sha256:123",
            "bad_host.io:x/app",
            "-bad.io/app",
            "app:.tag",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn display_roundtrip() {
        let r: Reference = "127.0.0.1:5000/a/b:t".parse().unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:t");
        assert_eq!(r.manifest_reference(), "t");
        let d = Digest::sha256(b"x");
        let pinned = r.with_digest(d.clone());
        assert_eq!(pinned.manifest_reference(), d.to_string());
        assert_eq!(pinned.to_string().parse::<Reference>().unwrap(), pinned);
    }
}
