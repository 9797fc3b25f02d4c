//! The image spec (version 1): what `berth build` reads — the closure graph
//! of Nix store paths, the roots, the image config, layering options, extra
//! files, platform and creation time — and its validation. The closure
//! entries use the field names of Nix's `exportReferencesGraph` (structured
//! attrs) and `nix path-info --json`, so either can be pasted in as is.
//!
//! Parsing is pure: nothing here touches the store. `docs/image-spec.md` is
//! the user-facing description of this format and must change with it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The spec version this berth reads and writes.
pub const SPEC_VERSION: u32 = 1;
/// The default Nix store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";
/// The default creation time: one second after the epoch, as Nix's
/// reproducible images use.
pub const DEFAULT_CREATED: &str = "1970-01-01T00:00:01Z";

/// Why a spec was rejected. Each message names the offending value and says
/// what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not JSON, or not the shape of a spec: said once, with its line and
    /// column (not also as a source, which would print it twice).
    #[error("{}", json_message(.0))]
    Json(serde_json::Error),
    /// A version this berth does not read.
    #[error(
        "image spec version {0} is not supported (this berth reads version {SPEC_VERSION}); upgrade berth or regenerate the spec"
    )]
    Version(u32),
    /// Anything else, with its explanation.
    #[error("image spec: {0}")]
    Invalid(String),
}

impl From<serde_json::Error> for SpecError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// `image spec, line L, column C: <what serde expected>`.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    if e.line() == 0 {
        format!("image spec is not valid JSON of the expected shape: {what}")
    } else {
        format!(
            "image spec, line {}, column {}: {what}",
            e.line(),
            e.column()
        )
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(msg.into()))
}

/// One store path of the closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorePathInfo {
    /// The absolute store path.
    pub path: String,
    /// Its NAR hash as Nix prints it (`sha256:<base32>` or SRI); the layer
    /// cache keys on it.
    pub nar_hash: String,
    /// Its NAR size in bytes (an estimate of its size on disk).
    pub nar_size: u64,
    /// The store paths it references (it may reference itself).
    #[serde(default)]
    pub references: Vec<String>,
}

/// The parts of the OCI image config a spec sets (OCI field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Command prefix.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Default arguments.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `NAME=value` environment entries.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Ports as `<port>/tcp`, `<port>/udp` or `<port>`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub exposed_ports: BTreeSet<String>,
    /// Volume mount points.
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub volumes: BTreeSet<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// Config labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the container, e.g. `SIGTERM`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

/// OCI writes sets (ports, volumes) as objects with empty values.
mod set_as_object {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        set: &BTreeSet<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(set.iter().map(|k| (k, serde_json::Map::new())))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeSet<String>, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        Ok(map.into_keys().collect())
    }
}

/// Layering options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Layering {
    /// Most layers the image may have, extra files included (at most 125,
    /// the limit of common runtimes).
    pub max_layers: usize,
    /// Store paths smaller than this (NAR bytes) do not get a layer of their
    /// own unless a group or the previous image gave them one.
    pub min_layer_size: u64,
    /// Store paths that must share one layer, each group in its own.
    pub groups: Vec<Vec<String>>,
    /// Store paths that had a layer of their own in the previous image
    /// (from its per-layer annotations): they keep one, so a small change
    /// moves few layers.
    pub previous: Vec<String>,
}

impl Default for Layering {
    fn default() -> Self {
        Self {
            max_layers: 100,
            min_layer_size: 0,
            groups: Vec::new(),
            previous: Vec::new(),
        }
    }
}

/// A file, directory or symlink added outside the store (`/etc/passwd`,
/// `/tmp`, `/bin` → an environment's `bin`). `mode` is octal permission
/// bits as a string, e.g. `"0644"` or `"1777"` (defaults: 0444 for files,
/// 0555 for directories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExtraFile {
    /// A regular file with inline UTF-8 contents.
    File {
        /// Absolute path in the image.
        path: String,
        /// The contents.
        contents: String,
        /// Octal permission bits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Owner uid (default: the image's, 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        /// Owner gid (default: the image's, 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
    },
    /// A directory.
    Directory {
        /// Absolute path in the image.
        path: String,
        /// Octal permission bits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Owner uid (default: the image's, 0), e.g. a non-root user's
        /// home or data directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        /// Owner gid (default: the image's, 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
    },
    /// A symbolic link, stored as is.
    Symlink {
        /// Absolute path in the image.
        path: String,
        /// Where it points.
        target: String,
    },
}

impl ExtraFile {
    /// Its path in the image.
    pub fn path(&self) -> &str {
        match self {
            Self::File { path, .. } | Self::Directory { path, .. } | Self::Symlink { path, .. } => {
                path
            }
        }
    }

    /// The owner it asks for, if any: (uid, gid), a missing half 0.
    pub fn owner(&self) -> Option<(u32, u32)> {
        match self {
            Self::File { uid, gid, .. } | Self::Directory { uid, gid, .. }
                if uid.is_some() || gid.is_some() =>
            {
                Some((uid.unwrap_or(0), gid.unwrap_or(0)))
            }
            _ => None,
        }
    }

    /// The permission bits, parsed.
    pub fn mode_bits(&self) -> Result<u32, SpecError> {
        let (mode, default) = match self {
            Self::File { mode, .. } => (mode, 0o444),
            Self::Directory { mode, .. } => (mode, 0o555),
            Self::Symlink { .. } => return Ok(0o777),
        };
        match mode {
            None => Ok(default),
            Some(m) => match u32::from_str_radix(m, 8) {
                Ok(bits) if bits <= 0o7777 && !m.is_empty() => Ok(bits),
                _ => invalid(format!(
                    "extra file {}: mode {m:?} is not octal permission bits like \"0644\"",
                    self.path()
                )),
            },
        }
    }
}

/// A whole image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    /// Must be [`SPEC_VERSION`].
    pub version: u32,
    /// Image name, for annotations and progress output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Nix store directory.
    #[serde(default = "default_store_dir")]
    pub store_dir: String,
    /// Every store path of the image, with its references.
    pub closure: Vec<StorePathInfo>,
    /// The store paths the image is built for; the closure must be exactly
    /// what they reference, transitively.
    #[serde(default)]
    pub roots: Vec<String>,
    /// Instead of `roots`: a store path of the closure whose references are
    /// the roots. It only carries them (the Nix library writes the config
    /// into it, so Nix finds every store path the config mentions) and is
    /// left out of the image. Resolved by [`ImageSpec::parse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots_from: Option<String>,
    /// Store paths (directories in the closure) whose files are linked into
    /// `/`, as `dockerTools`' `contents` does: each directory is created,
    /// each file or symlink becomes a symlink to its place in the store.
    /// The first path to provide a name wins; `extraFiles` win over all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<String>,
    /// Runtime configuration.
    #[serde(default)]
    pub config: ImageConfig,
    /// CPU architecture (`GOARCH` names: amd64, arm64, …).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Operating system.
    #[serde(default = "default_os")]
    pub os: String,
    /// Creation time (RFC 3339); fixed, so builds are reproducible.
    #[serde(default = "default_created")]
    pub created: String,
    /// Layering options.
    #[serde(default)]
    pub layering: Layering,
    /// Files outside the store, in one extra layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_files: Vec<ExtraFile>,
    /// Manifest annotations (`org.opencontainers.image.*` and others).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// A base image whose layers go under the closure's, reused byte for
    /// byte ([`crate::base`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<FromImage>,
}

/// Where a base image comes from: an OCI image layout on this machine (a
/// `pullImage` output in the Nix store), pinned by the digest in
/// `reference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromImage {
    /// The base as `registry/repository[:tag]@sha256:…`: its name (for
    /// the annotations and the SBOM) and the digest that pins it (a
    /// manifest, or an index whose image for the spec's platform is used).
    pub reference: String,
    /// An OCI image layout holding that digest; without one, `berth build`
    /// fetches the base from its registry (into the layer cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
}

impl FromImage {
    /// The digest `reference` pins.
    pub fn digest(&self) -> Option<berth_oci::Digest> {
        let (_, digest) = self.reference.rsplit_once('@')?;
        digest.parse().ok()
    }
}

fn default_store_dir() -> String {
    DEFAULT_STORE_DIR.to_owned()
}
fn default_architecture() -> String {
    "amd64".to_owned()
}
fn default_os() -> String {
    "linux".to_owned()
}
fn default_created() -> String {
    DEFAULT_CREATED.to_owned()
}

/// Runtimes refuse images with more layers than this.
pub const RUNTIME_LAYER_LIMIT: usize = 125;

impl ImageSpec {
    /// Parse and validate a spec.
    pub fn parse(json: &[u8]) -> Result<Self, SpecError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<u32>,
        }
        // Check the version first, so a newer spec gets the right error
        // instead of a complaint about a field this berth does not know.
        let mut doc: serde_json::Value = serde_json::from_slice(json)?;
        let mut attrs = false;
        // The structured-attrs form: a derivation's `.attrs.json`, the spec
        // in `berthSpec` and the closure in `closure` (from
        // `exportReferencesGraph.closure`); the derivation's other
        // attributes are not the spec's.
        if let Some(obj) = doc.as_object_mut() {
            if let Some(inner) = obj.remove("berthSpec") {
                attrs = true;
                let closure = obj.remove("closure");
                doc = inner;
                if let (Some(spec), Some(closure)) = (doc.as_object_mut(), closure) {
                    spec.entry("closure").or_insert(closure);
                }
            }
        }
        let v = VersionOnly::deserialize(&doc)?;
        match v.version {
            Some(SPEC_VERSION) => {}
            Some(other) => return Err(SpecError::Version(other)),
            None => return invalid("missing \"version\" (this berth reads version 1)"),
        }
        // From the bytes when they are the spec itself, so a shape error
        // has its line and column.
        let mut spec = if attrs {
            Self::deserialize(doc)?
        } else {
            serde_json::from_slice(json)?
        };
        spec.resolve_roots_from()?;
        spec.validate()?;
        Ok(spec)
    }

    /// Replace `rootsFrom` with the roots it carries, and drop it from the
    /// closure.
    fn resolve_roots_from(&mut self) -> Result<(), SpecError> {
        let Some(from) = self.roots_from.take() else {
            return Ok(());
        };
        if !self.roots.is_empty() {
            return invalid("give either roots or rootsFrom, not both");
        }
        let Some(at) = self.closure.iter().position(|p| p.path == from) else {
            return invalid(format!("rootsFrom {from} is not in the closure"));
        };
        let carrier = self.closure.remove(at);
        if self.closure.iter().any(|p| p.references.contains(&from)) {
            return invalid(format!(
                "rootsFrom {from} is referenced by another store path; it must only carry the roots"
            ));
        }
        self.roots = carrier
            .references
            .into_iter()
            .filter(|r| *r != from)
            .collect();
        Ok(())
    }

    /// Check everything that parses but cannot make an image.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(base) = &self.from_image {
            if base.digest().is_none() {
                return invalid(format!(
                    "fromImage {:?} is not pinned by digest: write it as name:tag@sha256:… (a tag can move, and the build must be reproducible)",
                    base.reference
                ));
            }
            if let Some(l) = &base.layout {
                if !l.starts_with('/') {
                    return invalid(format!(
                        "fromImage.layout {l:?} must be an absolute path (the pullImage output)"
                    ));
                }
            }
        }
        let store = self.store_dir.trim_end_matches('/');
        if !store.starts_with('/') || store.len() < 2 || store.contains("/../") {
            return invalid(format!(
                "storeDir {:?} must be an absolute directory",
                self.store_dir
            ));
        }
        if self.closure.is_empty() {
            return invalid("the closure is empty; list at least the roots' store paths");
        }
        let mut paths = BTreeSet::new();
        for p in &self.closure {
            check_store_path(store, &p.path)?;
            if !paths.insert(p.path.as_str()) {
                return invalid(format!(
                    "store path {} appears twice in the closure",
                    p.path
                ));
            }
            if p.nar_hash.trim().is_empty() {
                return invalid(format!("store path {} has an empty narHash", p.path));
            }
        }
        for p in &self.closure {
            for r in &p.references {
                if !paths.contains(r.as_str()) {
                    return invalid(format!(
                        "{} references {r}, which is not in the closure (regenerate the spec from the full closure)",
                        p.path
                    ));
                }
            }
        }
        if self.roots.is_empty() {
            return invalid("no roots; name the store paths the image is for");
        }
        for r in &self.roots {
            if !paths.contains(r.as_str()) {
                return invalid(format!("root {r} is not in the closure"));
            }
        }
        for c in &self.contents {
            if !paths.contains(c.as_str()) {
                return invalid(format!(
                    "contents names {c}, which is not in the closure (make it a root)"
                ));
            }
        }
        self.check_acyclic_and_reachable()?;
        self.check_config()?;
        self.check_layering(&paths)?;
        self.check_extra_files(store)?;
        Ok(())
    }

    fn check_acyclic_and_reachable(&self) -> Result<(), SpecError> {
        let index: BTreeMap<&str, &StorePathInfo> =
            self.closure.iter().map(|p| (p.path.as_str(), p)).collect();
        // Iterative DFS with colours; self-references are allowed (Nix
        // permits them), longer cycles are not possible in a real store.
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            White,
            Grey,
            Black,
        }
        let mut colour: BTreeMap<&str, Colour> =
            index.keys().map(|k| (*k, Colour::White)).collect();
        for root in self.roots.iter().map(String::as_str) {
            if colour[root] != Colour::White {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
            colour.insert(root, Colour::Grey);
            while let Some((node, next)) = stack.last_mut() {
                let refs = &index[*node].references;
                if *next < refs.len() {
                    let child = refs[*next].as_str();
                    *next += 1;
                    if child == *node {
                        continue;
                    }
                    match colour[child] {
                        Colour::White => {
                            colour.insert(child, Colour::Grey);
                            stack.push((child, 0));
                        }
                        Colour::Grey => {
                            return invalid(format!(
                                "the references form a cycle through {child}; a Nix closure cannot"
                            ));
                        }
                        Colour::Black => {}
                    }
                } else {
                    colour.insert(*node, Colour::Black);
                    stack.pop();
                }
            }
        }
        if let Some((path, _)) = colour.iter().find(|(_, c)| **c == Colour::White) {
            return invalid(format!(
                "{path} is in the closure but no root references it (regenerate the spec from the roots' closure)"
            ));
        }
        Ok(())
    }

    fn check_config(&self) -> Result<(), SpecError> {
        let c = &self.config;
        for e in &c.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => return invalid(format!("config.Env entry {e:?} is not NAME=value")),
            }
        }
        for p in &c.exposed_ports {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let ok_port = port.parse::<u16>().is_ok_and(|n| n > 0);
            if !ok_port || !matches!(proto, "tcp" | "udp" | "sctp") {
                return invalid(format!(
                    "config.ExposedPorts entry {p:?} is not <port>[/tcp|udp|sctp]"
                ));
            }
        }
        for v in &c.volumes {
            if !v.starts_with('/') {
                return invalid(format!(
                    "config.Volumes entry {v:?} is not an absolute path"
                ));
            }
        }
        if let Some(w) = &c.working_dir {
            if !w.starts_with('/') {
                return invalid(format!("config.WorkingDir {w:?} is not an absolute path"));
            }
        }
        if c.user.as_deref() == Some("") {
            return invalid("config.User is empty; leave it out for root");
        }
        if self.architecture.is_empty() || self.os.is_empty() {
            return invalid("architecture and os must not be empty");
        }
        if !looks_like_rfc3339(&self.created) {
            return invalid(format!(
                "created {:?} is not an RFC 3339 time like {DEFAULT_CREATED}",
                self.created
            ));
        }
        Ok(())
    }

    fn check_layering(&self, paths: &BTreeSet<&str>) -> Result<(), SpecError> {
        let l = &self.layering;
        let reserved = usize::from(self.has_extra_layer());
        if l.max_layers < 1 + reserved || l.max_layers > RUNTIME_LAYER_LIMIT {
            return invalid(format!(
                "layering.maxLayers = {} must be from {} to {RUNTIME_LAYER_LIMIT}",
                l.max_layers,
                1 + reserved
            ));
        }
        let mut grouped = BTreeSet::new();
        for g in &l.groups {
            if g.is_empty() {
                return invalid("layering.groups has an empty group");
            }
            for p in g {
                if !paths.contains(p.as_str()) {
                    return invalid(format!(
                        "layering.groups names {p}, which is not in the closure"
                    ));
                }
                if !grouped.insert(p.as_str()) {
                    return invalid(format!("layering.groups names {p} twice"));
                }
            }
        }
        if l.groups.len() + reserved > l.max_layers {
            return invalid(format!(
                "layering.groups asks for {} layers but maxLayers is {}",
                l.groups.len() + reserved,
                l.max_layers
            ));
        }
        Ok(())
    }

    fn check_extra_files(&self, store: &str) -> Result<(), SpecError> {
        let mut seen = BTreeSet::new();
        for f in &self.extra_files {
            let p = f.path();
            let bad = !p.starts_with('/')
                || p == "/"
                || p.ends_with('/')
                || p.split('/')
                    .skip(1)
                    .any(|c| c.is_empty() || c == "." || c == "..");
            if bad {
                return invalid(format!(
                    "extra file path {p:?} must be absolute and normalised (no '.', '..', '//' or trailing '/')"
                ));
            }
            if p == store || p.starts_with(&format!("{store}/")) {
                return invalid(format!(
                    "extra file {p} is inside the store; put it in a store path instead"
                ));
            }
            if !seen.insert(p) {
                return invalid(format!("extra file {p} is listed twice"));
            }
            f.mode_bits()?;
            if let ExtraFile::Symlink { target, .. } = f {
                if target.is_empty() {
                    return invalid(format!("extra symlink {p} has an empty target"));
                }
            }
        }
        Ok(())
    }

    /// Whether the image has the extra layer on top (extra files, or links
    /// to `contents`).
    pub fn has_extra_layer(&self) -> bool {
        !self.extra_files.is_empty() || !self.contents.is_empty()
    }

    /// The closure entry of `path`.
    pub fn path_info(&self, path: &str) -> Option<&StorePathInfo> {
        self.closure.iter().find(|p| p.path == path)
    }
}

/// Check `path` is `<store>/<32 base32 chars>-<name>`.
fn check_store_path(store: &str, path: &str) -> Result<(), SpecError> {
    let Some(base) = path.strip_prefix(store).and_then(|r| r.strip_prefix('/')) else {
        return invalid(format!("{path} is not in the store {store}"));
    };
    let nix32 =
        |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'd' | b'f'..=b'n' | b'p'..=b's' | b'v'..=b'z');
    let name_char = |c: u8| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c);
    let b = base.as_bytes();
    let ok = b.len() > 33
        && b[..32].iter().all(|&c| nix32(c))
        && b[32] == b'-'
        && b[33..].iter().all(|&c| name_char(c))
        && b[33] != b'.';
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "{path} is not a store path (expected {store}/<32-character hash>-<name>)"
        ))
    }
}

/// A cheap shape check for `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains(['+', '-']))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store path for tests: `/nix/store/<hash from name>-<name>`.
    pub(crate) fn sp(name: &str) -> String {
        const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let d = berth_oci::Digest::sha256(name.as_bytes());
        let hash: String = d
            .hex()
            .bytes()
            .take(32)
            .map(|c| NIX32[(c as usize) % 32] as char)
            .collect();
        format!("/nix/store/{hash}-{name}")
    }

    pub(crate) fn info(name: &str, size: u64, refs: &[&str]) -> StorePathInfo {
        StorePathInfo {
            path: sp(name),
            nar_hash: format!("sha256:{name}"),
            nar_size: size,
            references: refs.iter().map(|r| sp(r)).collect(),
        }
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "closure": [
                {"path": sp("app"), "narHash": "sha256:1", "narSize": 10, "references": [sp("lib"), sp("app")], "closureSize": 30},
                {"path": sp("lib"), "narHash": "sha256:2", "narSize": 20, "references": []},
            ],
            "roots": [sp("app")],
        })
    }

    #[test]
    fn minimal_spec_with_defaults() {
        let spec = ImageSpec::parse(minimal().to_string().as_bytes()).unwrap();
        assert_eq!(spec.store_dir, "/nix/store");
        assert_eq!(spec.architecture, "amd64");
        assert_eq!(spec.created, DEFAULT_CREATED);
        assert_eq!(spec.layering.max_layers, 100);
        assert_eq!(spec.path_info(&sp("lib")).unwrap().nar_size, 20);
    }

    #[test]
    fn config_round_trips_with_oci_names() {
        let mut v = minimal();
        v["config"] = serde_json::json!({
            "Entrypoint": ["/bin/app"], "Env": ["A=1"], "ExposedPorts": {"8080/tcp": {}},
            "Volumes": {"/data": {}}, "User": "1000:1000", "WorkingDir": "/", "Labels": {"x": "y"},
            "StopSignal": "SIGTERM"
        });
        v["extraFiles"] = serde_json::json!([
            {"path": "/tmp", "type": "directory", "mode": "1777"},
            {"path": "/etc/passwd", "type": "file", "contents": "root:x:0:0::/:/bin/sh\n"},
            {"path": "/bin", "type": "symlink", "target": format!("{}/bin", sp("app"))},
        ]);
        let spec = ImageSpec::parse(v.to_string().as_bytes()).unwrap();
        assert!(spec.config.exposed_ports.contains("8080/tcp"));
        assert_eq!(spec.extra_files[0].mode_bits().unwrap(), 0o1777);
        assert_eq!(spec.extra_files[1].mode_bits().unwrap(), 0o444);
        let again = serde_json::to_value(&spec.config).unwrap();
        assert_eq!(again["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    }

    #[test]
    fn rejections_name_the_problem() {
        type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| v["version"] = 2.into()),
                "version 2 is not supported",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("version");
                }),
                "missing \"version\"",
            ),
            (Box::new(|v| v["bogus"] = 1.into()), "unknown field `bogus`"),
            (
                Box::new(|v| v["closure"][1]["path"] = "/usr/lib".into()),
                "not in the store",
            ),
            (
                Box::new(|v| v["closure"][1]["path"] = "/nix/store/short-lib".into()),
                "not a store path",
            ),
            (
                Box::new(|v| v["closure"][0]["references"][0] = sp("ghost").into()),
                "not in the closure",
            ),
            (
                Box::new(|v| v["closure"][1]["references"] = serde_json::json!([sp("app")])),
                "cycle",
            ),
            (
                Box::new(|v| v["roots"] = serde_json::json!([sp("lib")])),
                "no root references it",
            ),
            (Box::new(|v| v["roots"] = serde_json::json!([])), "no roots"),
            (
                Box::new(|v| v["closure"][1]["path"] = sp("app").into()),
                "appears twice",
            ),
            (
                Box::new(|v| v["config"] = serde_json::json!({"Env": ["novalue"]})),
                "not NAME=value",
            ),
            (
                Box::new(|v| v["config"] = serde_json::json!({"ExposedPorts": {"http": {}}})),
                "ExposedPorts",
            ),
            (
                Box::new(|v| v["config"] = serde_json::json!({"Cmdd": []})),
                "unknown field `Cmdd`",
            ),
            (Box::new(|v| v["created"] = "yesterday".into()), "RFC 3339"),
            (
                Box::new(|v| v["layering"] = serde_json::json!({"maxLayers": 500})),
                "maxLayers",
            ),
            (
                Box::new(|v| {
                    v["extraFiles"] =
                        serde_json::json!([{"path": "/a/../etc", "type": "directory"}])
                }),
                "normalised",
            ),
            (
                Box::new(|v| {
                    v["extraFiles"] =
                        serde_json::json!([{"path": "/nix/store/x", "type": "directory"}])
                }),
                "inside the store",
            ),
            (
                Box::new(
                    |v| v["extraFiles"] = serde_json::json!([{"path": "/x", "type": "file", "contents": "", "mode": "rwx"}]),
                ),
                "octal",
            ),
        ];
        for (mutate, want) in cases {
            let mut v = minimal();
            mutate(&mut v);
            let err = ImageSpec::parse(v.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in: {err}");
        }
    }

    #[test]
    fn structured_attrs_form_with_roots_from() {
        // What nix/lib's spec derivation writes: its .attrs.json, with the
        // derivation's own attributes around the spec.
        let carrier = sp("img-image-roots");
        let attrs = serde_json::json!({
            "builder": "/nix/store/x-busybox/bin/busybox",
            "name": "img-image-spec.json",
            "outputs": {"out": "/nix/store/y-img-image-spec.json"},
            "exportReferencesGraph": {"closure": [carrier]},
            "berthSpec": {
                "version": 1,
                "name": "img",
                "rootsFrom": carrier,
                "contents": [sp("app")],
                "config": {"Entrypoint": [format!("{}/bin/app", sp("app"))]},
            },
            "closure": [
                {"path": carrier, "narHash": "sha256:c", "narSize": 1, "references": [sp("app"), sp("lib")], "closureSize": 31},
                {"path": sp("app"), "narHash": "sha256:1", "narSize": 10, "references": [sp("lib")]},
                {"path": sp("lib"), "narHash": "sha256:2", "narSize": 20, "references": []},
            ],
        });
        let spec = ImageSpec::parse(attrs.to_string().as_bytes()).unwrap();
        assert_eq!(spec.roots, vec![sp("app"), sp("lib")]);
        assert!(
            spec.path_info(&carrier).is_none(),
            "the carrier is left out"
        );
        assert_eq!(spec.closure.len(), 2);
        assert_eq!(spec.contents, vec![sp("app")]);
        assert!(spec.has_extra_layer());

        // Unknown keys inside berthSpec are still errors.
        let mut typo = attrs.clone();
        typo["berthSpec"]["entrypoint"] = serde_json::json!([]);
        assert!(ImageSpec::parse(typo.to_string().as_bytes()).is_err());
        // Both roots and rootsFrom: refused.
        let mut both = attrs.clone();
        both["berthSpec"]["roots"] = serde_json::json!([sp("app")]);
        let err = ImageSpec::parse(both.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // A carrier that is not in the closure.
        let mut lost = attrs.clone();
        lost["berthSpec"]["rootsFrom"] = serde_json::json!(sp("elsewhere"));
        let err = ImageSpec::parse(lost.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not in the closure"), "{err}");
        // contents must be in the closure.
        let mut outside = attrs;
        outside["berthSpec"]["contents"] = serde_json::json!([sp("nope")]);
        let err = ImageSpec::parse(outside.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("contents names"), "{err}");
    }
}
