//! Where image references live in GitOps YAML, decided by keys rather than
//! by `kind`, so the same rules cover pod specs of every workload kind,
//! Helm values files, Flux HelmRelease `values`, Argo CD `valuesObject` and
//! kustomize `helmCharts[].valuesInline`:
//!
//! - a key `image` or `…Image` with a string value `name[:tag][@digest]`
//!   (containers, initContainers, ephemeralContainers, values);
//! - a mapping with `repository` and `tag` and/or `digest` (and an optional
//!   `registry`): the Helm `image:` block;
//! - entries of an `images:` list with `name` and `newName`/`newTag`/
//!   `digest`: kustomize (kustomization.yaml, Flux `Kustomization.spec`);
//! - strings in `kustomize.images` (Argo CD: `[alias=]name[:tag][@digest]`);
//! - literal block scalars that hold YAML (Argo CD inline `helm.values`,
//!   k3s HelmChart `valuesContent`, Talos patches) are parsed and searched.

use std::collections::HashSet;

use berth_oci::{Digest, Reference};

use crate::yaml::{Node, Scalar, Stream};

/// Which shape a reference was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `image: name:tag@digest`.
    Image,
    /// Helm `repository` + `tag` / `digest`.
    HelmValues,
    /// kustomize `images:` entry.
    Kustomize,
    /// Argo CD `kustomize.images` string.
    ArgoKustomize,
}

impl Form {
    /// A short name for summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Image => "image",
            Form::HelmValues => "helm",
            Form::Kustomize => "kustomize",
            Form::ArgoKustomize => "argocd",
        }
    }
}

/// A scalar to rewrite: in the file itself (`block: None`) or inside the
/// literal block scalar `block` (then `start..end` index its value).
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub(crate) block: Option<usize>,
    pub(crate) event: usize,
    pub(crate) value: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// How a new digest is written.
#[derive(Debug, Clone)]
pub(crate) enum Pin {
    /// The value becomes `keep@<digest>`.
    Suffix(Loc, String),
    /// The value becomes `<algorithm>:<hex>`.
    Digest(Loc),
    /// The value becomes `<hex>` (kustomize `newName: x@sha256`, `newTag: <hex>`).
    Hex(Loc),
    /// Cannot be pinned without adding a key; the reason.
    No(&'static str),
}

impl Pin {
    pub(crate) fn loc(&self) -> Option<&Loc> {
        match self {
            Pin::Suffix(l, _) | Pin::Digest(l) | Pin::Hex(l) => Some(l),
            Pin::No(_) => None,
        }
    }

    /// The scalar's new value for `digest`.
    pub(crate) fn value(&self, digest: &Digest) -> Option<String> {
        match self {
            Pin::Suffix(_, keep) => Some(format!("{keep}@{digest}")),
            Pin::Digest(_) => Some(digest.to_string()),
            Pin::Hex(_) => Some(digest.hex().to_owned()),
            Pin::No(_) => None,
        }
    }
}

/// One image reference found in a file.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// 1-based line of the value that would change (or of the reference).
    pub line: usize,
    /// The shape it was written in.
    pub form: Form,
    /// The image name as written (`ghcr.io/org/app`, `nginx`).
    pub name: String,
    /// Its tag, if any (without a digest).
    pub tag: Option<String>,
    /// Its current digest, if pinned.
    pub digest: Option<Digest>,
    /// The normalised name and tag, for matching.
    pub reference: Reference,
    pub(crate) pin: Pin,
}

impl ImageRef {
    /// Why this reference cannot be pinned, if it cannot.
    pub fn unpinnable(&self) -> Option<&'static str> {
        match self.pin {
            Pin::No(why) => Some(why),
            _ => None,
        }
    }
}

/// A literal block scalar holding YAML (inline Helm values).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) scalar: Scalar,
    pub(crate) lines: Vec<usize>,
}

fn templated(s: &str) -> bool {
    s.contains("{{") || s.contains("${") || s.contains('<') || s.contains(' ')
}

fn is_image_key(k: &str) -> bool {
    k == "image" || (k.ends_with("Image") && k.len() > 5)
}

/// Split `name[:tag][@digest]`; `None` if it is not a valid reference.
pub(crate) fn split_ref(
    value: &str,
) -> Option<(String, Option<String>, Option<Digest>, Reference)> {
    if value.is_empty() || templated(value) {
        return None;
    }
    let (rest, digest) = match value.split_once('@') {
        Some((r, d)) => (r, Some(d.parse::<Digest>().ok()?)),
        None => (value, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_owned())),
        None => (rest, None),
    };
    let reference: Reference = rest.parse().ok()?;
    Some((name.to_owned(), tag, digest, reference))
}

/// An image `name` with a tag value `tag[@digest]` and maybe a `digest`
/// key: (tag, digest, normalised reference); `None` if it is not a valid,
/// untemplated reference.
fn tagged(
    name: &str,
    tag: Option<&str>,
    digest_key: Option<&Scalar>,
) -> Option<(Option<String>, Option<Digest>, Reference)> {
    let tag = tag.filter(|t| !t.is_empty());
    let (tag_only, tag_digest) = match tag.map(|t| t.split_once('@')) {
        Some(Some((t, d))) => (Some(t.to_owned()), d.parse::<Digest>().ok()),
        Some(None) => (tag.map(str::to_owned), None),
        None => (None, None),
    };
    if tag_only.as_deref().is_some_and(templated) {
        return None;
    }
    let digest = digest_key
        .and_then(|d| d.value.parse::<Digest>().ok())
        .or(tag_digest);
    let full = match &tag_only {
        Some(t) => format!("{name}:{t}"),
        None => name.to_owned(),
    };
    Some((tag_only, digest, full.parse().ok()?))
}

/// Walks one stream (a file, or the YAML inside a block scalar).
pub(crate) struct Finder<'a> {
    pub(crate) text: &'a str,
    pub(crate) stream: &'a Stream,
    pub(crate) block: Option<usize>,
    pub(crate) refs: Vec<ImageRef>,
    /// Literal blocks holding YAML, found at the top level only.
    pub(crate) blocks: Vec<Block>,
    seen: HashSet<usize>,
}

impl<'a> Finder<'a> {
    pub(crate) fn new(text: &'a str, stream: &'a Stream, block: Option<usize>) -> Self {
        Self {
            text,
            stream,
            block,
            refs: Vec::new(),
            blocks: Vec::new(),
            seen: HashSet::new(),
        }
    }

    pub(crate) fn run(mut self) -> Self {
        let mut path = Vec::new();
        for doc in &self.stream.docs {
            self.walk(doc, &mut path);
        }
        self
    }

    fn loc(&self, s: &Scalar) -> Option<Loc> {
        let (start, end) = s.raw_region(self.text)?;
        Some(Loc {
            block: self.block,
            event: s.event,
            value: s.value.clone(),
            start,
            end,
        })
    }

    fn push(
        &mut self,
        at: &Scalar,
        form: Form,
        parts: (String, Option<String>, Option<Digest>, Reference),
        pin: Pin,
    ) {
        if !self.seen.insert(at.event) {
            return;
        }
        let (name, tag, digest, reference) = parts;
        self.refs.push(ImageRef {
            // Inside a block this is relative to the block; the caller rebases it.
            line: at.line,
            form,
            name,
            tag,
            digest,
            reference,
            pin,
        });
    }

    fn scalar(&self, n: &'a Node) -> Option<&'a Scalar> {
        match self.stream.resolve(n) {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn walk(&mut self, node: &'a Node, path: &mut Vec<String>) {
        match self.stream.resolve(node) {
            Node::Map(pairs) => self.map(pairs, path),
            Node::Seq(items) => {
                for item in items {
                    self.walk(item, path);
                }
            }
            // YAML inside a literal block (Argo CD `helm.values: |`, k3s
            // `valuesContent`, Talos patches) is searched too.
            Node::Scalar(s) if self.block.is_none() => self.block_values(s),
            Node::Scalar(_) | Node::Alias(_) => {}
        }
    }

    fn get(&self, pairs: &'a [(Node, Node)], key: &str) -> Option<&'a Scalar> {
        pairs.iter().find_map(|(k, v)| match k {
            Node::Scalar(k) if k.value == key => self.scalar(v),
            _ => None,
        })
    }

    fn map(&mut self, pairs: &'a [(Node, Node)], path: &mut Vec<String>) {
        let parent_key = path.last().cloned();
        let parent = parent_key.as_deref();
        let kustomize = ["newName", "newTag", "digest"]
            .iter()
            .any(|k| self.get(pairs, k).is_some());
        match (self.get(pairs, "name"), self.get(pairs, "repository")) {
            (Some(name), _) if parent == Some("images") && kustomize => {
                self.kustomize_entry(pairs, name)
            }
            (_, Some(repo)) => {
                let image_block =
                    parent.is_some_and(is_image_key) || self.get(pairs, "pullPolicy").is_some();
                self.helm_pair(pairs, repo, image_block)
            }
            _ => {}
        }
        for (k, v) in pairs {
            let Node::Scalar(key) = k else { continue };
            let key = key.value.as_str();
            let value = self.stream.resolve(v);
            match value {
                Node::Scalar(s) if is_image_key(key) => self.image_string(s, Form::Image, ""),
                Node::Seq(items) if key == "images" && parent == Some("kustomize") => {
                    for item in items {
                        if let Some(s) = self.scalar(item) {
                            let prefix = s.value.split_once('=').map_or("", |(a, _)| a);
                            let prefix = if prefix.is_empty() {
                                String::new()
                            } else {
                                format!("{prefix}=")
                            };
                            self.image_string(s, Form::ArgoKustomize, &prefix);
                        }
                    }
                }
                _ => {
                    path.push(key.to_owned());
                    self.walk(value, path);
                    path.pop();
                }
            }
        }
    }

    /// `image: name[:tag][@digest]` (after `prefix`, for Argo CD's `alias=`).
    fn image_string(&mut self, s: &Scalar, form: Form, prefix: &str) {
        let Some(rest) = s.value.strip_prefix(prefix) else {
            return;
        };
        let Some(parts) = split_ref(rest) else { return };
        let keep = s
            .value
            .split_once('@')
            .map_or(s.value.as_str(), |(k, _)| k)
            .to_owned();
        let pin = match self.loc(s) {
            Some(loc) => Pin::Suffix(loc, keep),
            None => Pin::No("the value is not written verbatim on one line (escapes or folding)"),
        };
        self.push(s, form, parts, pin);
    }

    /// Where a digest goes in a block with a `digest` key and/or a tag
    /// scalar (`tag`, `newTag`): the scalar and how, or `None` if neither.
    fn pin_in(
        &self,
        digest_key: Option<&'a Scalar>,
        tag: Option<&'a Scalar>,
        tag_only: &Option<String>,
    ) -> Option<(&'a Scalar, Pin)> {
        match (digest_key, tag) {
            (Some(d), _) => Some((
                d,
                self.loc(d).map_or(
                    Pin::No("the digest is not written verbatim on one line"),
                    Pin::Digest,
                ),
            )),
            (None, Some(t)) => Some((
                t,
                match (self.loc(t), tag_only) {
                    (Some(l), Some(keep)) => Pin::Suffix(l, keep.clone()),
                    _ => Pin::No("the tag is empty or not written verbatim on one line"),
                },
            )),
            (None, None) => None,
        }
    }

    /// Helm's `image: {registry, repository, tag, digest}`.
    fn helm_pair(&mut self, pairs: &'a [(Node, Node)], repo: &'a Scalar, image_block: bool) {
        let tag = self.get(pairs, "tag");
        let digest_key = self.get(pairs, "digest");
        if repo.value.contains("://") || templated(&repo.value) {
            return;
        }
        if tag.is_none() && digest_key.is_none() {
            // An image block that leaves the tag to the chart: reported,
            // not restructured (other mappings with a `repository` key are
            // not images).
            if image_block {
                if let Ok(reference) = repo.value.parse::<Reference>() {
                    let why = "no `tag` key (the chart's default tag): add `tag:` to pin it";
                    let parts = (repo.value.clone(), None, None, reference);
                    self.push(repo, Form::HelmValues, parts, Pin::No(why));
                }
            }
            return;
        }
        let name = match self.get(pairs, "registry") {
            Some(r) if !r.value.is_empty() && !templated(&r.value) => {
                format!("{}/{}", r.value, repo.value)
            }
            _ => repo.value.clone(),
        };
        let Some((tag_only, digest, reference)) =
            tagged(&name, tag.map(|t| t.value.as_str()), digest_key)
        else {
            return;
        };
        if let Some((at, pin)) = self.pin_in(digest_key, tag, &tag_only) {
            self.push(
                at,
                Form::HelmValues,
                (name, tag_only, digest, reference),
                pin,
            );
        }
    }

    /// kustomize `images:` entry.
    fn kustomize_entry(&mut self, pairs: &'a [(Node, Node)], name: &'a Scalar) {
        let new_name = self.get(pairs, "newName");
        let new_tag = self.get(pairs, "newTag");
        let digest_key = self.get(pairs, "digest");
        if new_name.is_none() && new_tag.is_none() && digest_key.is_none() {
            return;
        }
        let mut image = new_name.map_or(name.value.as_str(), |n| n.value.as_str());
        // kustomize idiom: `newName: x@sha256` + `newTag: <hex>`.
        if let (Some(base), Some(t)) = (image.strip_suffix("@sha256"), new_tag) {
            let Ok(digest) = format!("sha256:{}", t.value).parse::<Digest>() else {
                return;
            };
            let Ok(reference) = base.parse::<Reference>() else {
                return;
            };
            let pin = self
                .loc(t)
                .map_or(Pin::No("newTag is not written verbatim"), Pin::Hex);
            self.push(
                t,
                Form::Kustomize,
                (base.to_owned(), None, Some(digest), reference),
                pin,
            );
            return;
        }
        if new_name.is_none() {
            // `name` is matched without its tag.
            let slash = image.rfind('/').map_or(0, |i| i + 1);
            if let Some(i) = image[slash..].find(':') {
                image = &image[..slash + i];
            }
        }
        if templated(image) {
            return;
        }
        let Some((tag_only, digest, reference)) =
            tagged(image, new_tag.map(|t| t.value.as_str()), digest_key)
        else {
            return;
        };
        let (at, pin) = self.pin_in(digest_key, new_tag, &tag_only).unwrap_or((
            new_name.unwrap_or(name),
            Pin::No("the entry has neither newTag nor digest to hold a digest"),
        ));
        self.push(
            at,
            Form::Kustomize,
            (image.to_owned(), tag_only, digest, reference),
            pin,
        );
    }

    fn block_values(&mut self, s: &Scalar) {
        let Some(lines) = s.literal_lines(self.text) else {
            return;
        };
        if !s.value.contains(':') {
            return;
        }
        self.blocks.push(Block {
            scalar: s.clone(),
            lines,
        });
    }
}
