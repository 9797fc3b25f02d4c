//! The image's JSON documents, each a pure function of the spec and the
//! built layers, written with sorted keys so the same spec gives the same
//! bytes: the config (with one history entry per layer naming its store
//! paths), the manifest (compressor id and store paths as layer
//! annotations, `org.opencontainers.image.*` annotations), its descriptor
//! in the layout's index, and the multi-architecture index.

use std::collections::BTreeMap;

use berth_oci::{Digest, ImageLayout, media_type};
use serde_json::{Value, json};

use crate::base::Base;
use crate::image::{BuildError, BuildOptions, BuiltImage, BuiltLayer};
use crate::spec::ImageSpec;

pub use berth_oci::manifest::{COMPRESSOR_ANNOTATION, STORE_PATHS_ANNOTATION};

/// Write a multi-architecture OCI index over `images` (each with the spec
/// it was built from, for its platform) into `layout`, name it `tag`
/// there, and return its digest. Platforms must differ.
pub fn write_index(
    layout: &ImageLayout,
    images: &[(&ImageSpec, &BuiltImage)],
    tag: Option<&str>,
) -> Result<Digest, BuildError> {
    let mut seen = std::collections::BTreeSet::new();
    for (spec, _) in images {
        if !seen.insert((spec.os.as_str(), spec.architecture.as_str())) {
            return Err(BuildError::Io {
                path: layout.root().to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "two specs are for {}/{}; an index needs one image per platform",
                        spec.os, spec.architecture
                    ),
                ),
            });
        }
    }
    let manifests: Vec<Value> = images
        .iter()
        .map(|(spec, image)| {
            json!({
                "mediaType": media_type::OCI_MANIFEST,
                "digest": image.manifest_digest.to_string(),
                "size": image.manifest.len(),
                "platform": {"architecture": spec.architecture, "os": spec.os},
            })
        })
        .collect();
    let created = images
        .iter()
        .map(|(s, _)| s.created.as_str())
        .max()
        .unwrap_or(crate::spec::DEFAULT_CREATED);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
        "annotations": {"org.opencontainers.image.created": created},
    });
    let bytes = serde_json::to_vec(&index).expect("JSON values serialise");
    let digest = layout.write_blob(&bytes)?;
    let descriptor = berth_oci::spec::Descriptor::new(
        berth_oci::spec::MediaType::ImageIndex,
        bytes.len() as u64,
        berth_oci::spec::Digest::from(&digest),
    );
    layout.add_manifest(descriptor, tag)?;
    Ok(digest)
}

fn history_line(layer: &BuiltLayer) -> String {
    if layer.store_paths.is_empty() {
        "berth: extra files".to_owned()
    } else {
        format!("berth: {}", layer.store_paths.join(" "))
    }
}

/// The config: with a base, its `diff_ids` and history first and its
/// runtime settings under the spec's ([`Base::merge_config`]).
pub(crate) fn config_json(spec: &ImageSpec, layers: &[BuiltLayer], base: Option<&Base>) -> Vec<u8> {
    let mut config = serde_json::to_value(&spec.config).unwrap_or_else(|_| json!({}));
    if let Some(obj) = config.as_object_mut() {
        if obj.is_empty() {
            config = json!({});
        }
    }
    let mut diff_ids: Vec<String> = Vec::new();
    let mut history: Vec<Value> = Vec::new();
    if let Some(b) = base {
        config = b.merge_config(&config);
        diff_ids.extend(b.layers.iter().map(|l| l.diff_id.to_string()));
        history.extend(b.history());
    }
    diff_ids.extend(layers.iter().map(|l| l.diff_id.to_string()));
    history.extend(layers.iter().map(|l| {
        json!({
            "created": spec.created,
            "created_by": history_line(l),
        })
    }));
    let value = json!({
        "created": spec.created,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids,
        },
        "history": history,
    });
    serde_json::to_vec(&value).expect("JSON values serialise")
}

/// The manifest: with a base, its layers first, byte for byte as its
/// manifest lists them, each annotated with the base's digest, and the
/// standard `org.opencontainers.image.base.*` annotations.
pub(crate) fn manifest_json(
    spec: &ImageSpec,
    opts: &BuildOptions,
    config: &Digest,
    config_size: usize,
    layers: &[BuiltLayer],
    base: Option<&Base>,
) -> Vec<u8> {
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".into(),
        spec.created.clone(),
    );
    if let Some(name) = &spec.name {
        annotations.insert("org.opencontainers.image.title".into(), name.clone());
    }
    let mut layer_descs: Vec<Value> = Vec::new();
    if let Some(b) = base {
        annotations.insert("org.opencontainers.image.base.name".into(), b.name.clone());
        annotations.insert(
            "org.opencontainers.image.base.digest".into(),
            b.pinned.to_string(),
        );
        layer_descs.extend(b.layers.iter().map(|l| {
            json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
                "annotations": {crate::base::BASE_LAYER_ANNOTATION: b.manifest.to_string()},
            })
        }));
    }
    annotations.extend(spec.annotations.clone());
    let own: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut a = BTreeMap::new();
            a.insert(COMPRESSOR_ANNOTATION.to_owned(), opts.compression.id());
            if !l.store_paths.is_empty() {
                a.insert(STORE_PATHS_ANNOTATION.to_owned(), l.store_paths.join("\n"));
            }
            json!({
                "mediaType": opts.compression.media_type(),
                "digest": l.digest.to_string(),
                "size": l.size,
                "annotations": a,
            })
        })
        .collect();
    layer_descs.extend(own);
    let value = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": media_type::OCI_CONFIG,
            "digest": config.to_string(),
            "size": config_size,
        },
        "layers": layer_descs,
        "annotations": annotations,
    });
    serde_json::to_vec(&value).expect("JSON values serialise")
}

pub(crate) fn oci_descriptor(
    digest: &Digest,
    size: usize,
    spec: &ImageSpec,
) -> berth_oci::spec::Descriptor {
    let mut d = berth_oci::spec::Descriptor::new(
        berth_oci::spec::MediaType::ImageManifest,
        size as u64,
        berth_oci::spec::Digest::from(digest),
    );
    d.set_platform(Some(
        berth_oci::spec::PlatformBuilder::default()
            .architecture(berth_oci::spec::Arch::from(spec.architecture.as_str()))
            .os(berth_oci::spec::Os::from(spec.os.as_str()))
            .build()
            .expect("architecture and os are set"),
    ));
    d
}
