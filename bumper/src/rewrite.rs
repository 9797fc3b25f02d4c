//! Scanning a checkout for image references and rewriting their digests:
//! each file is parsed once, each edit is a splice at the scalar's span,
//! and the edited text is parsed again and compared event by event with
//! the original (only the targeted scalars may differ) before anyone sees
//! it. Inline Helm values in literal block scalars are edited inside the
//! block and verified at both levels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_oci::{Digest, Reference};

use crate::BumpError;
use crate::find::{Block, Finder, Form, ImageRef, Loc};
use crate::yaml::{self, Splice};

/// Files larger than this are not GitOps YAML; they are skipped.
pub const MAX_FILE: u64 = 16 << 20;

/// One YAML file and the image references in it.
#[derive(Debug)]
pub struct FileRefs {
    /// Path relative to the repository root.
    pub path: PathBuf,
    /// The references, in file order.
    pub refs: Vec<ImageRef>,
    text: String,
    blocks: Vec<Block>,
}

/// Scan one file's text.
pub fn scan_text(path: &Path, text: String) -> Result<FileRefs, BumpError> {
    let stream = yaml::parse(&text).map_err(|e| BumpError::Parse {
        file: path.to_owned(),
        line: e.line,
        message: e.message,
    })?;
    let found = Finder::new(&text, &stream, None).run();
    let mut refs = found.refs;
    let blocks = found.blocks;
    for (i, block) in blocks.iter().enumerate() {
        // Text in a `values: |` block that is not YAML is left alone.
        let Ok(inner) = yaml::parse(&block.scalar.value) else {
            continue;
        };
        for mut r in Finder::new(&block.scalar.value, &inner, Some(i)).run().refs {
            r.line += block.scalar.line - 1;
            refs.push(r);
        }
    }
    refs.sort_by_key(|r| r.line);
    Ok(FileRefs {
        path: path.to_owned(),
        refs,
        text,
        blocks,
    })
}

/// A file that was not scanned, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Path relative to the root.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Scan every `*.yaml`/`*.yml` under `root` (dot-directories such as
/// `.git` are skipped; symlinks are not followed). Files that do not
/// parse (Helm chart templates, for one) are listed in the second result.
pub fn scan_repo(root: &Path) -> Result<(Vec<FileRefs>, Vec<Skipped>), BumpError> {
    let mut paths = Vec::new();
    collect(root, Path::new(""), &mut paths).map_err(|e| BumpError::Io {
        path: root.to_owned(),
        cause: e,
    })?;
    paths.sort();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = paths.len().div_ceil(threads).max(1);
    let results: Vec<Result<FileRefs, Skipped>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|p| scan_one(root, p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for r in results {
        match r {
            Ok(f) if !f.refs.is_empty() => files.push(f),
            Ok(_) => {}
            Err(s) => skipped.push(s),
        }
    }
    Ok((files, skipped))
}

fn scan_one(root: &Path, rel: &Path) -> Result<FileRefs, Skipped> {
    let skip = |reason: String| Skipped {
        path: rel.to_owned(),
        reason,
    };
    let full = root.join(rel);
    let meta = std::fs::symlink_metadata(&full).map_err(|e| skip(e.to_string()))?;
    if meta.len() > MAX_FILE {
        return Err(skip(format!("larger than {MAX_FILE} bytes")));
    }
    let bytes = std::fs::read(&full).map_err(|e| skip(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| skip("not UTF-8".into()))?;
    scan_text(rel, text).map_err(|e| skip(e.to_string()))
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name_str) = name.to_str() else {
            continue;
        };
        if name_str.starts_with('.') {
            continue;
        }
        let ty = entry.file_type()?;
        let path = rel.join(&name);
        if ty.is_dir() {
            collect(root, &path, out)?;
        } else if ty.is_file() && (name_str.ends_with(".yaml") || name_str.ends_with(".yml")) {
            out.push(path);
        }
    }
    Ok(())
}

impl FileRefs {
    /// The original text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The file with reference `i` pinned to `digest` for every `(i,
    /// digest)` in `edits`, verified; `None` if that is what it already
    /// says.
    pub fn rewrite(&self, edits: &[(usize, Digest)]) -> Result<Option<String>, BumpError> {
        // Scalar → its new value; one scalar may back several references
        // (an anchor), which must agree.
        let mut wanted: HashMap<(Option<usize>, usize), (&Loc, String, usize)> = HashMap::new();
        for (i, digest) in edits {
            let r = &self.refs[*i];
            let (Some(loc), Some(value)) = (r.pin.loc(), r.pin.value(digest)) else {
                continue;
            };
            if loc.value == value {
                continue;
            }
            match wanted.get(&(loc.block, loc.event)) {
                Some((_, v, _)) if *v != value => {
                    return Err(BumpError::Verify {
                        file: self.path.clone(),
                        line: r.line,
                        message: "two targets want different digests in one scalar".into(),
                    });
                }
                _ => {
                    wanted.insert((loc.block, loc.event), (loc, value, r.line));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        let mut splices = Vec::new();
        let mut targets = HashMap::new();
        let mut inner: HashMap<usize, (Vec<Splice>, HashMap<usize, String>)> = HashMap::new();
        for (loc, value, _) in wanted.values() {
            let splice = Splice {
                start: loc.start,
                end: loc.end,
                text: value.clone(),
            };
            match loc.block {
                None => {
                    splices.push(splice);
                    targets.insert(loc.event, value.clone());
                }
                Some(b) => {
                    let e = inner.entry(b).or_default();
                    e.0.push(splice);
                    e.1.insert(loc.event, value.clone());
                }
            }
        }
        for (b, (inner_splices, inner_targets)) in &inner {
            let block = &self.blocks[*b];
            let old = &block.scalar.value;
            let verify_err = |line: usize, message: String| BumpError::Verify {
                file: self.path.clone(),
                line: block.scalar.line + line.max(1) - 1,
                message,
            };
            let new = yaml::apply(old, inner_splices)
                .ok_or_else(|| verify_err(1, "overlapping edits".into()))?;
            yaml::verify(old, &new, inner_targets).map_err(|(l, m)| verify_err(l, m))?;
            for s in inner_splices {
                let line = old[..s.start].matches('\n').count();
                let line_start = old[..s.start].rfind('\n').map_or(0, |i| i + 1);
                let start = block.lines[line] + (s.start - line_start);
                let end = start + (s.end - s.start);
                if self.text.get(start..end) != old.get(s.start..s.end) {
                    return Err(verify_err(
                        line + 1,
                        "block scalar does not map onto the file".into(),
                    ));
                }
                splices.push(Splice {
                    start,
                    end,
                    text: s.text.clone(),
                });
            }
            targets.insert(block.scalar.event, new);
        }
        let new = yaml::apply(&self.text, &splices).ok_or_else(|| BumpError::Verify {
            file: self.path.clone(),
            line: 1,
            message: "overlapping edits".into(),
        })?;
        yaml::verify(&self.text, &new, &targets).map_err(|(line, message)| BumpError::Verify {
            file: self.path.clone(),
            line,
            message,
        })?;
        Ok(Some(new))
    }
}

/// What to pin: `repository[:tag]`. With a tag it matches references to
/// that repository with that tag; without, every reference to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As the user wrote it.
    pub image: String,
    reference: Reference,
}

impl Target {
    /// Parse `repository[:tag]` (no digest).
    pub fn parse(image: &str) -> Result<Self, BumpError> {
        let bad = |why: String| BumpError::Target {
            image: image.to_owned(),
            message: why,
        };
        if image.contains('@') {
            return Err(bad("give repository[:tag], not a digest".into()));
        }
        let reference: Reference = image.parse().map_err(|e| bad(format!("{e}")))?;
        Ok(Self {
            image: image.to_owned(),
            reference,
        })
    }

    /// The normalised reference (registry, repository, tag).
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Whether an image `reference` with `tag` is one this target pins.
    fn covers(&self, reference: &Reference, tag: Option<&str>) -> bool {
        reference.registry() == self.reference.registry()
            && reference.repository() == self.reference.repository()
            && self.reference.tag().is_none_or(|t| tag == Some(t))
    }

    /// Whether `r` is a reference this target pins.
    pub fn matches(&self, r: &ImageRef) -> bool {
        self.covers(&r.reference, r.tag.as_deref())
    }

    /// Whether every reference `other` pins, this target pins too.
    pub fn covers_target(&self, other: &Target) -> bool {
        self.covers(&other.reference, other.reference.tag())
    }

    /// Matching a tag beats matching the repository.
    fn specificity(&self) -> u8 {
        u8::from(self.reference.tag().is_some())
    }
}

/// One reference that a bump changes (or would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// File, relative to the root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The shape it is written in.
    pub form: Form,
    /// Image name as written.
    pub name: String,
    /// Its tag.
    pub tag: Option<String>,
    /// Its digest now.
    pub old: Option<Digest>,
    /// Its digest after.
    pub new: Digest,
    /// Index of the target that matched.
    pub target: usize,
}

/// A reference a target matched but that cannot hold a digest.
#[derive(Debug, Clone)]
pub struct Unpinnable {
    /// File and line.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Image name.
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

/// One edit: reference index in its file, digest, target index.
type Edit = (usize, Digest, usize);

/// The outcome of matching targets against a scan.
#[derive(Debug, Default)]
pub struct Plan {
    /// References whose digest changes.
    pub changes: Vec<Change>,
    /// References already at the wanted digest.
    pub unchanged: usize,
    /// Matched but impossible to pin.
    pub unpinnable: Vec<Unpinnable>,
    /// Per file: the edits `(reference index, digest, target index)`.
    edits: Vec<(usize, Vec<Edit>)>,
}

impl Plan {
    /// Match `targets` (each with its digest) against `files`.
    pub fn new(files: &[FileRefs], targets: &[(Target, Digest)]) -> Self {
        let mut plan = Plan::default();
        for (fi, f) in files.iter().enumerate() {
            let mut edits = Vec::new();
            for (ri, r) in f.refs.iter().enumerate() {
                let best = targets
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, _))| t.matches(r))
                    .max_by_key(|(i, (t, _))| (t.specificity(), usize::MAX - i));
                let Some((ti, (_, digest))) = best else {
                    continue;
                };
                if let Some(reason) = r.unpinnable() {
                    plan.unpinnable.push(Unpinnable {
                        file: f.path.clone(),
                        line: r.line,
                        name: r.name.clone(),
                        reason,
                    });
                    continue;
                }
                if r.digest.as_ref() == Some(digest) {
                    plan.unchanged += 1;
                    continue;
                }
                plan.changes.push(Change {
                    file: f.path.clone(),
                    line: r.line,
                    form: r.form,
                    name: r.name.clone(),
                    tag: r.tag.clone(),
                    old: r.digest.clone(),
                    new: digest.clone(),
                    target: ti,
                });
                edits.push((ri, digest.clone(), ti));
            }
            if !edits.is_empty() {
                plan.edits.push((fi, edits));
            }
        }
        plan
    }

    /// Only the changes of `targets` (for one branch per target or group).
    pub fn for_targets(&self, targets: &[usize]) -> Plan {
        Plan {
            changes: self
                .changes
                .iter()
                .filter(|c| targets.contains(&c.target))
                .cloned()
                .collect(),
            edits: self
                .edits
                .iter()
                .map(|(fi, e)| {
                    (
                        *fi,
                        e.iter()
                            .filter(|x| targets.contains(&x.2))
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, e)| !e.is_empty())
                .collect(),
            ..Plan::default()
        }
    }

    /// The new text of every file that changes, verified.
    pub fn render(&self, files: &[FileRefs]) -> Result<Vec<(PathBuf, String)>, BumpError> {
        let mut out = Vec::new();
        for (fi, edits) in &self.edits {
            let edits: Vec<_> = edits.iter().map(|(ri, d, _)| (*ri, d.clone())).collect();
            if let Some(text) = files[*fi].rewrite(&edits)? {
                out.push((files[*fi].path.clone(), text));
            }
        }
        Ok(out)
    }
}
