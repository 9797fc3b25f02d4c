//! The image's SBOM: a CycloneDX 1.5 JSON document with one component per
//! store path of the closure (name and version parsed as Nix does,
//! `pkg:nix/<name>@<version>` identifiers, the store path and narHash as
//! properties, the reference graph as dependencies), attached to the image
//! as an OCI 1.1 artifact whose `subject` is the image manifest, so
//! registries list it through the referrers API.
//!
//! Like the image, it is a pure function of the spec: no clock, no random
//! serial number (it is derived from the image digest).

use std::collections::BTreeMap;

use berth_oci::{Digest, ImageLayout, media_type};
use serde_json::json;

use crate::image::BuildError;
use crate::spec::ImageSpec;

pub use berth_oci::media_type::CYCLONEDX_JSON;

/// Split a store path's name part into (name, version) as Nix's
/// `parseDrvName` does: the version starts at the first `-` followed by a
/// non-letter.
pub fn parse_name(store_path: &str) -> (String, String) {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    let b = name.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (name[..i].to_owned(), name[i + 1..].to_owned());
        }
    }
    (name.to_owned(), String::new())
}

/// A UUID (version 5 layout) derived from `digest`, for the serial number.
fn serial(digest: &Digest) -> String {
    let h = digest.hex();
    format!(
        "urn:uuid:{}-{}-5{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        // Variant bits 10xx.
        ["8", "9", "a", "b"][usize::from(h.as_bytes()[16]) % 4],
        &h[17..20],
        &h[20..32]
    )
}

/// The CycloneDX document for `spec`, whose image manifest is `image`.
pub fn cyclonedx(spec: &ImageSpec, image: &Digest) -> Vec<u8> {
    let mut paths: Vec<&crate::spec::StorePathInfo> = spec.closure.iter().collect();
    paths.sort_by(|a, b| a.path.cmp(&b.path));
    let components: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| {
            let (name, version) = parse_name(&p.path);
            let purl = if version.is_empty() {
                format!("pkg:nix/{name}")
            } else {
                format!("pkg:nix/{name}@{version}")
            };
            json!({
                "type": "library",
                "bom-ref": p.path,
                "name": name,
                "version": version,
                "purl": purl,
                "properties": [
                    {"name": "nix:store_path", "value": p.path},
                    {"name": "nix:nar_hash", "value": p.nar_hash},
                    {"name": "nix:nar_size", "value": p.nar_size.to_string()},
                ],
            })
        })
        .collect();
    // The base image, by the digest that pins it: a container component
    // the image depends on (its own contents are its own SBOM's).
    let mut components = components;
    let mut roots = spec.roots.clone();
    if let Some(base) = &spec.from_image {
        let (name, digest) = base
            .reference
            .rsplit_once('@')
            .unwrap_or((base.reference.as_str(), ""));
        let repo = name
            .rsplit_once('/')
            .map_or(name, |(_, r)| r)
            .split(':')
            .next()
            .unwrap_or(name);
        let qualifier = name.rsplit_once(':').filter(|(_, t)| !t.contains('/'));
        let purl = match qualifier {
            Some((_, tag)) => format!("pkg:oci/{repo}@{}?tag={tag}", digest.replace(':', "%3A")),
            None => format!("pkg:oci/{repo}@{}", digest.replace(':', "%3A")),
        };
        components.insert(
            0,
            json!({
                "type": "container",
                "bom-ref": base.reference,
                "name": name,
                "version": digest,
                "purl": purl,
                "properties": [{"name": "berth:base_image", "value": base.reference}],
            }),
        );
        roots.push(base.reference.clone());
    }
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in &paths {
        let mut refs: Vec<&str> = p
            .references
            .iter()
            .map(String::as_str)
            .filter(|r| *r != p.path)
            .collect();
        refs.sort_unstable();
        refs.dedup();
        deps.insert(&p.path, refs);
    }
    let name = spec.name.clone().unwrap_or_else(|| "image".to_owned());
    roots.sort();
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "serialNumber": serial(image),
        "metadata": {
            "timestamp": spec.created,
            "tools": {"components": [{"type": "application", "name": "berth", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": image.to_string(),
                "name": name,
                "version": image.to_string(),
            },
        },
        "components": components,
        "dependencies": std::iter::once(json!({"ref": image.to_string(), "dependsOn": roots}))
            .chain(deps.iter().map(|(r, d)| json!({"ref": r, "dependsOn": d})))
            .collect::<Vec<_>>(),
    });
    serde_json::to_vec(&doc).expect("JSON values serialise")
}

/// Write the SBOM artifact for image `image` (of `image_size` bytes) into
/// `layout` and return its manifest digest.
pub fn write_sbom(
    spec: &ImageSpec,
    layout: &ImageLayout,
    image: &Digest,
    image_size: u64,
) -> Result<Digest, BuildError> {
    let sbom = cyclonedx(spec, image);
    let sbom_digest = layout.write_blob(&sbom)?;
    let empty = layout.write_blob(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": CYCLONEDX_JSON,
        "config": {"mediaType": media_type::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": CYCLONEDX_JSON, "digest": sbom_digest.to_string(), "size": sbom.len()}],
        "subject": {"mediaType": media_type::OCI_MANIFEST, "digest": image.to_string(), "size": image_size},
        "annotations": {"org.opencontainers.image.created": spec.created},
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let digest = layout.write_blob(&bytes)?;
    // Listed in index.json, as the image-layout spec keeps referrers.
    let mut descriptor = berth_oci::spec::Descriptor::new(
        berth_oci::spec::MediaType::ImageManifest,
        bytes.len() as u64,
        berth_oci::spec::Digest::from(&digest),
    );
    descriptor.set_artifact_type(Some(berth_oci::spec::MediaType::Other(
        CYCLONEDX_JSON.to_owned(),
    )));
    layout.add_manifest(descriptor, None)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_name_parsing() {
        for (path, name, version) in [
            ("/nix/store/abc-glibc-2.40-66", "glibc", "2.40-66"),
            ("/nix/store/abc-hello-2.12.1", "hello", "2.12.1"),
            ("/nix/store/abc-busybox-static", "busybox-static", ""),
            (
                "/nix/store/abc-python3.11-requests-2.31.0",
                "python3.11-requests",
                "2.31.0",
            ),
            ("/nix/store/abc-ca-certificates", "ca-certificates", ""),
        ] {
            assert_eq!(
                parse_name(path),
                (name.to_owned(), version.to_owned()),
                "{path}"
            );
        }
    }

    #[test]
    fn document_lists_every_path_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::image::tests::fixture(&dir.path().join("store"));
        let image = Digest::sha256(b"manifest");
        let a = cyclonedx(&spec, &image);
        assert_eq!(a, cyclonedx(&spec, &image));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(
            v["components"].as_array().unwrap().len(),
            spec.closure.len()
        );
        assert!(v["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        let app = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "app")
            .unwrap();
        assert_eq!(app["version"], "1.0");
        assert_eq!(app["purl"], "pkg:nix/app@1.0");
        assert_eq!(app["properties"][1]["value"], "sha256:a");
    }

    #[test]
    fn a_base_image_is_a_component_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = crate::image::tests::fixture(&dir.path().join("store"));
        let pinned = format!("sha256:{}", "ab".repeat(32));
        spec.from_image = Some(crate::spec::FromImage {
            reference: format!("registry.lan/library/alpine:3.20@{pinned}"),
            layout: Some("/nix/store/x-alpine-oci".into()),
        });
        let image = Digest::sha256(b"manifest");
        let v: serde_json::Value = serde_json::from_slice(&cyclonedx(&spec, &image)).unwrap();
        let components = v["components"].as_array().unwrap();
        assert_eq!(
            components.len(),
            spec.closure.len() + 1,
            "the closure's too"
        );
        let base = &components[0];
        assert_eq!(base["type"], "container");
        assert_eq!(base["name"], "registry.lan/library/alpine:3.20");
        assert_eq!(base["version"], pinned.as_str());
        assert_eq!(
            base["purl"],
            format!("pkg:oci/alpine@sha256%3A{}?tag=3.20", "ab".repeat(32))
        );
        let top = &v["dependencies"][0];
        assert!(
            top["dependsOn"]
                .as_array()
                .unwrap()
                .contains(&base["bom-ref"])
        );
    }
}
