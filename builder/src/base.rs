//! Base images (`fromImage`): the base's manifest and config read from an
//! OCI image layout and checked (an image, not an artifact; its layers and
//! `diff_ids` agree; the platform is the spec's), its layer blobs copied
//! into the output verbatim and verified on the way, and the config merge
//! — the base's runtime settings kept unless the spec sets them. Nothing
//! of the base is unpacked or recompressed: its layers keep their digests.

use std::collections::BTreeMap;

use berth_oci::{Digest, ImageLayout, media_type};
use serde_json::{Value, json};

use crate::image::BuildError;
use crate::spec::{FromImage, ImageSpec};

/// Manifest annotation naming the layer's base (the manifest digest it
/// came from); set on every base layer.
pub const BASE_LAYER_ANNOTATION: &str = "dev.berth.base.digest";

/// One layer of the base, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayer {
    /// The blob's media type (kept as it is).
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// Its `diff_id` from the base's config.
    pub diff_id: Digest,
}

/// A base image, resolved for one platform.
#[derive(Debug, Clone)]
pub struct Base {
    /// `registry/repository[:tag]` as the spec names it (without digest).
    pub name: String,
    /// The digest the spec pins (a manifest or an index).
    pub pinned: Digest,
    /// The image manifest used (the pinned one, or the platform's child).
    pub manifest: Digest,
    /// Its layers, bottom first.
    pub layers: Vec<BaseLayer>,
    /// Its config document.
    pub config: Value,
    /// Where its blobs are.
    layout: ImageLayout,
}

fn bad(base: &FromImage, why: impl std::fmt::Display) -> BuildError {
    BuildError::Base(format!("fromImage {}: {why}", base.reference))
}

impl Base {
    /// Read the base `from` of `spec` from its layout.
    pub fn load(spec: &ImageSpec, from: &FromImage) -> Result<Self, BuildError> {
        let pinned = from
            .digest()
            .ok_or_else(|| bad(from, "not pinned by digest"))?;
        let root = from
            .layout
            .as_deref()
            .ok_or_else(|| bad(from, "no layout (fetch it with berth.lib.pullImage)"))?;
        let layout = ImageLayout::open(root).map_err(|e| bad(from, e))?;
        let read = |d: &Digest, what: &str| -> Result<Value, BuildError> {
            let bytes = layout.read_blob(d).map_err(|e| {
                bad(
                    from,
                    format!("{what} {d} is not in the layout {root} ({e})"),
                )
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|e| bad(from, format!("its {what} {d} is not JSON: {e}")))
        };
        let top = read(&pinned, "manifest")?;
        let (manifest, doc) = if is_index(None, &top) {
            let d = platform_child(&top, &spec.os, &spec.architecture).map_err(|e| bad(from, e))?;
            let doc = read(&d, "manifest")?;
            (d, doc)
        } else {
            (pinned.clone(), top)
        };
        match doc["mediaType"].as_str() {
            Some(media_type::OCI_MANIFEST) | Some(media_type::DOCKER_MANIFEST) | None => {}
            Some(other) => {
                return Err(bad(from, format!("{manifest} is a {other}, not an image")));
            }
        }
        let config_desc = &doc["config"];
        let config_type = config_desc["mediaType"].as_str().unwrap_or_default();
        if config_type != media_type::OCI_CONFIG && config_type != media_type::DOCKER_CONFIG {
            return Err(bad(
                from,
                format!(
                    "{manifest} is not an image (its config is {config_type:?}; an artifact cannot be a base)"
                ),
            ));
        }
        let config_digest: Digest = config_desc["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(from, "its manifest has no config digest"))?;
        let config = read(&config_digest, "config")?;
        let os = config["os"].as_str().unwrap_or_default();
        let arch = config["architecture"].as_str().unwrap_or_default();
        if os != spec.os || arch != spec.architecture {
            return Err(bad(
                from,
                format!(
                    "it is for {os}/{arch}, the spec for {}/{}; pick a base for this platform",
                    spec.os, spec.architecture
                ),
            ));
        }
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.as_str().and_then(|d| d.parse().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(from, "its config has a malformed rootfs.diff_ids"))?;
        let descs = doc["layers"].as_array().cloned().unwrap_or_default();
        if descs.len() != diff_ids.len() {
            return Err(bad(
                from,
                format!(
                    "its manifest lists {} layers and its config {} diff_ids",
                    descs.len(),
                    diff_ids.len()
                ),
            ));
        }
        let layers = descs
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| {
                let digest = d["digest"].as_str().and_then(|s| s.parse().ok());
                let size = d["size"].as_u64();
                let media_type = d["mediaType"].as_str().unwrap_or_default().to_owned();
                match (digest, size) {
                    (Some(digest), Some(size))
                        if media_type.contains("layer") || media_type.contains("rootfs.diff") =>
                    {
                        Ok(BaseLayer {
                            media_type,
                            digest,
                            size,
                            diff_id,
                        })
                    }
                    _ => Err(bad(
                        from,
                        format!("a layer of {manifest} is malformed: {d}"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = from
            .reference
            .rsplit_once('@')
            .map_or(from.reference.as_str(), |(n, _)| n)
            .to_owned();
        Ok(Self {
            name,
            pinned,
            manifest,
            layers,
            config,
            layout,
        })
    }

    /// Put every base layer's blob into `out`, each verified against its
    /// digest first (one already there is kept): a hard link where the
    /// filesystem allows (no byte written), else a copy.
    pub fn copy_blobs(&self, out: &ImageLayout) -> Result<(), BuildError> {
        for l in &self.layers {
            if out.has_blob(&l.digest) {
                continue;
            }
            let mut reader = self.layout.open_blob(&l.digest)?;
            let read = std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| {
                BuildError::Base(format!(
                    "fromImage {}: layer {} does not verify: {e}",
                    self.name, l.digest
                ))
            })?;
            let src = self.layout.blob_path(&l.digest);
            let size =
                if read == l.size && std::fs::hard_link(&src, out.blob_path(&l.digest)).is_ok() {
                    read
                } else {
                    let reader = self.layout.open_blob(&l.digest)?;
                    out.write_blob_from(reader, Some(&l.digest))?.1
                };
            if size != l.size {
                return Err(BuildError::Base(format!(
                    "fromImage {}: layer {} is {size} bytes, its manifest says {}",
                    self.name, l.digest, l.size
                )));
            }
        }
        Ok(())
    }

    /// The files of the base that the spec's own files (`extraFiles`,
    /// `users`, the links `contents` makes in `/`) replace in the image:
    /// the top layer wins, so these are the base's files nobody will see.
    /// Reads the base's tar headers (once per base: the list is kept in
    /// the layer cache when there is one).
    pub fn shadowed(
        &self,
        spec: &ImageSpec,
        opts: &crate::image::BuildOptions,
    ) -> Result<Vec<String>, BuildError> {
        let ours = crate::jobs::extra_files_entries(spec, opts)?.non_dir_paths();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let cached = opts.cache.as_ref().map(|c| {
            c.dir()
                .join("base-files")
                .join(format!("{}.json", self.manifest.hex()))
        });
        let files: std::collections::BTreeSet<String> = match cached
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(list) => list,
            None => {
                let list = image_files(&self.layout, &self.layers)?;
                if let Some(p) = &cached {
                    if let Some(dir) = p.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(p, serde_json::to_vec(&list).unwrap_or_default());
                }
                list
            }
        };
        Ok(ours.into_iter().filter(|p| files.contains(p)).collect())
    }

    /// The base's history entries (one per layer and empty ones in
    /// between, as its config lists them).
    pub fn history(&self) -> Vec<Value> {
        self.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The merged runtime config: the spec's settings over the base's
    /// (see docs/image-spec.md, "fromImage").
    pub fn merge_config(&self, spec_config: &Value) -> Value {
        merge_config(&self.config["config"], spec_config)
    }
}

/// Whether `doc` (served as `served`, when known) is an index rather than
/// an image manifest.
fn is_index(served: Option<&str>, doc: &Value) -> bool {
    let index = |t: &str| t == media_type::OCI_INDEX || t == media_type::DOCKER_MANIFEST_LIST;
    served.is_some_and(index)
        || doc["mediaType"].as_str().is_some_and(index)
        || doc["manifests"].is_array()
}

/// The digest of index `doc`'s image for `os`/`architecture`, or why
/// there is none (naming the platforms it has).
fn platform_child(doc: &Value, os: &str, architecture: &str) -> Result<Digest, String> {
    let children = doc["manifests"].as_array().map_or(&[][..], Vec::as_slice);
    let Some(child) = children
        .iter()
        .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == architecture)
    else {
        let offered: Vec<String> = children
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap_or("?"),
                    m["platform"]["architecture"].as_str().unwrap_or("?")
                )
            })
            .collect();
        return Err(format!(
            "the index has no image for {os}/{architecture} (it has {}); pick a base for this platform",
            offered.join(", ")
        ));
    };
    child["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "its index lists a child without a digest".to_owned())
}

/// Fetch the base `reference` (pinned by digest) from its registry into
/// `layout`, as much of it as a build for `os`/`architecture` needs: the
/// pinned manifest (an index keeps only that platform's image), its
/// config and its layers, every blob verified before it is stored, and
/// the pinned digest named `tag` in the layout's index. What the layout
/// already holds is not fetched again.
pub fn pull(
    client: &berth_oci::client::Client,
    reference: &str,
    os: &str,
    architecture: &str,
    layout: &ImageLayout,
    tag: Option<&str>,
) -> Result<Digest, BuildError> {
    let fail = |why: String| BuildError::Base(format!("fromImage {reference}: {why}"));
    let parsed: berth_oci::Reference = reference
        .parse()
        .map_err(|e| fail(format!("not an image reference ({e})")))?;
    let pinned = parsed.digest().cloned().ok_or_else(|| {
        fail("not pinned by digest: write it as name:tag@sha256:… (a tag can move, and the build must be reproducible)".into())
    })?;
    let (registry, repo) = (parsed.registry(), parsed.repository());
    let get_manifest = |d: &Digest| -> Result<(String, Vec<u8>), BuildError> {
        match client.manifest(registry, repo, &d.to_string()) {
            Ok(Some((media_type, bytes, _))) => Ok((media_type, bytes)),
            Ok(None) => Err(fail(format!(
                "{registry} has no manifest {d} in {repo}; check the digest"
            ))),
            Err(e) => Err(fail(e.to_string())),
        }
    };
    let (top_type, top) = get_manifest(&pinned)?;
    layout.write_blob_from(top.as_slice(), Some(&pinned))?;
    let doc: Value =
        serde_json::from_slice(&top).map_err(|e| fail(format!("its manifest is not JSON: {e}")))?;
    let index = is_index(Some(&top_type), &doc);
    let image = if index {
        let child = platform_child(&doc, os, architecture).map_err(fail)?;
        let (_, bytes) = get_manifest(&child)?;
        layout.write_blob_from(bytes.as_slice(), Some(&child))?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| fail(format!("its manifest is not JSON: {e}")))?
    } else {
        doc
    };
    let mut blobs: Vec<Digest> = Vec::new();
    for d in
        std::iter::once(&image["config"]).chain(image["layers"].as_array().into_iter().flatten())
    {
        let digest = d["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(format!("a descriptor without a digest: {d}")))?;
        blobs.push(digest);
    }
    for d in &blobs {
        client
            .blob_into(registry, repo, d, layout)
            .map_err(|e| fail(e.to_string()))?;
    }
    let mut desc = berth_oci::spec::Descriptor::new(
        if index {
            berth_oci::spec::MediaType::ImageIndex
        } else {
            berth_oci::spec::MediaType::ImageManifest
        },
        top.len() as u64,
        berth_oci::spec::Digest::from(&pinned),
    );
    desc.set_annotations(None);
    layout.add_manifest(desc, tag)?;
    Ok(pinned)
}

/// The file (not directory) paths of an image's layers, bottom first,
/// with whiteouts applied: what its filesystem holds. Reads the tar
/// headers only, through the layers' decompressors.
pub fn image_files(
    layout: &ImageLayout,
    layers: &[BaseLayer],
) -> Result<std::collections::BTreeSet<String>, BuildError> {
    use std::io::Read;
    let mut files = std::collections::BTreeSet::new();
    for l in layers {
        let blob = layout.open_blob(&l.digest)?;
        let mut reader: Box<dyn Read> = if l.media_type.ends_with("zstd") {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(|e| {
                BuildError::Base(format!("layer {} does not decompress: {e}", l.digest))
            })?)
        } else if l.media_type.ends_with("gzip") {
            Box::new(flate2::read::MultiGzDecoder::new(blob))
        } else {
            Box::new(blob)
        };
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut long_name: Option<String> = None;
        let mut header = [0u8; 512];
        loop {
            if read_full(&mut reader, &mut header)
                .map_err(|e| BuildError::Base(format!("layer {}: {e}", l.digest)))?
                == 0
                || header.iter().all(|&b| b == 0)
            {
                break;
            }
            let field = |r: std::ops::Range<usize>| {
                let f = &header[r];
                let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
                String::from_utf8_lossy(&f[..end]).into_owned()
            };
            let size = u64::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
            let kind = header[156];
            let mut data = Vec::new();
            let padded = size.div_ceil(512) * 512;
            if kind == b'L' || kind == b'x' {
                (&mut reader)
                    .take(padded)
                    .read_to_end(&mut data)
                    .map_err(|e| BuildError::Base(format!("layer {}: {e}", l.digest)))?;
                data.truncate(size as usize);
                let text = String::from_utf8_lossy(&data);
                long_name = if kind == b'L' {
                    Some(text.trim_end_matches('\0').to_owned())
                } else {
                    text.lines()
                        .find_map(|r| r.split_once(" path=").map(|(_, p)| p.to_owned()))
                };
                continue;
            }
            std::io::copy(&mut (&mut reader).take(padded), &mut std::io::sink())
                .map_err(|e| BuildError::Base(format!("layer {}: {e}", l.digest)))?;
            let name = long_name.take().unwrap_or_else(|| {
                let prefix = field(345..500);
                let name = field(0..100);
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            let path = format!("/{}", name.trim_start_matches("./").trim_end_matches('/'));
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
            if base == ".wh..wh..opq" {
                removed.push(format!("{dir}/"));
            } else if let Some(gone) = base.strip_prefix(".wh.") {
                removed.push(format!("{dir}/{gone}"));
            } else if kind != b'5' {
                added.push(path);
            }
        }
        for r in &removed {
            if r.ends_with('/') {
                files.retain(|f: &String| !f.starts_with(r.as_str()));
            } else {
                let under = format!("{r}/");
                files.retain(|f: &String| f != r && !f.starts_with(&under));
            }
        }
        files.extend(added);
    }
    Ok(files)
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `NAME` of a `NAME=value` entry.
fn env_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(n, _)| n)
}

/// The spec's config over the base's:
/// - `Env`: the base's variables, each replaced by the spec's of the same
///   name, then the spec's new ones, in order;
/// - `Labels`: the base's, each replaced by the spec's of the same key;
/// - `ExposedPorts`, `Volumes`: both;
/// - `Entrypoint`, `Cmd`, `User`, `WorkingDir`, `StopSignal`: the spec's
///   if it sets them, else the base's — except that a spec setting
///   `Entrypoint` and no `Cmd` drops the base's `Cmd` (as a Dockerfile's
///   `ENTRYPOINT` does), since it was written for another entrypoint;
/// - anything else the base sets (`Healthcheck`, `Shell`, …): kept.
pub fn merge_config(base: &Value, spec: &Value) -> Value {
    let mut out: BTreeMap<String, Value> = base
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let Some(spec) = spec.as_object() else {
        return json!(out);
    };
    for (key, value) in spec {
        match key.as_str() {
            "Env" => {
                let mut env: Vec<Value> = out
                    .get("Env")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for new in value.as_array().into_iter().flatten() {
                    let name = env_name(new.as_str().unwrap_or_default());
                    match env
                        .iter_mut()
                        .find(|e| env_name(e.as_str().unwrap_or_default()) == name)
                    {
                        Some(slot) => *slot = new.clone(),
                        None => env.push(new.clone()),
                    }
                }
                out.insert(key.clone(), Value::Array(env));
            }
            "Labels" | "ExposedPorts" | "Volumes" => {
                let mut map = out
                    .get(key)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in value.as_object().into_iter().flatten() {
                    map.insert(k.clone(), v.clone());
                }
                out.insert(key.clone(), Value::Object(map));
            }
            "Entrypoint" => {
                if !spec.contains_key("Cmd") {
                    out.remove("Cmd");
                }
                out.insert(key.clone(), value.clone());
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    json!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_settings_go_over_the_bases() {
        let base = json!({
            "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "User": "0",
            "Labels": {"vendor": "alpine", "keep": "1"},
            "ExposedPorts": {"22/tcp": {}},
            "Healthcheck": {"Test": ["CMD", "true"]},
        });
        let spec = json!({
            "Env": ["PATH=/nix/bin:/usr/bin", "APP=1"],
            "Entrypoint": ["/nix/store/x-app/bin/app"],
            "User": "1000:1000",
            "Labels": {"vendor": "me"},
            "ExposedPorts": {"8080/tcp": {}},
        });
        assert_eq!(
            merge_config(&base, &spec),
            json!({
                "Env": ["PATH=/nix/bin:/usr/bin", "LANG=C.UTF-8", "APP=1"],
                "Entrypoint": ["/nix/store/x-app/bin/app"],
                "WorkingDir": "/",
                "User": "1000:1000",
                "Labels": {"vendor": "me", "keep": "1"},
                "ExposedPorts": {"22/tcp": {}, "8080/tcp": {}},
                "Healthcheck": {"Test": ["CMD", "true"]},
            })
        );
        // A spec that sets nothing keeps the base's config whole; Cmd
        // with Entrypoint keeps both.
        assert_eq!(merge_config(&base, &json!({})), base);
        let both = merge_config(&base, &json!({"Entrypoint": ["e"], "Cmd": ["c"]}));
        assert_eq!(both["Cmd"], json!(["c"]));
    }
}
