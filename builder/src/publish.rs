//! What `berth build` does with the images it builds, once: one spec, or
//! several tied together by a multi-architecture index, each with its
//! CycloneDX SBOM, built into one layout ([`build_set`]); the result copied
//! into further layouts by hard links ([`Built::copy_to`]); pushed in the
//! order a registry needs — every platform image before the index that
//! names it, the SBOMs (referrers whose subject must exist) last
//! ([`Built::push`]); and checked against what a registry holds
//! ([`verify`]). Sockets are opened only through `berth_oci::client`.

use berth_oci::client::{Client, ClientError, PushReport};
use berth_oci::layout::LayoutError;
use berth_oci::{Digest, ImageLayout, Manifest, ManifestError, Reference};

use crate::image::{BuildError, BuildOptions, build_image};
use crate::manifest::write_index;
use crate::sbom::write_sbom;
use crate::spec::ImageSpec;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Building an image failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A layout could not be read or written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A built manifest does not parse (a bug, or a layout changed under us).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A registry operation failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The image went up but its SBOM did not.
    #[error("the image was pushed, but the SBOM of {image} was not: {source}")]
    Sbom {
        /// The image whose SBOM failed.
        image: Digest,
        /// Why.
        source: ClientError,
    },
    /// Several specs need an index.
    #[error("{0} specs make one multi-architecture image only with --index")]
    NeedsIndex(usize),
    /// `--verify`: the registry holds another image.
    #[error("{dest} is {found}, but this spec builds {built}: the image differs from its inputs")]
    Differs {
        /// The reference checked.
        dest: String,
        /// What the registry holds.
        found: Digest,
        /// What the spec builds.
        built: Digest,
    },
    /// `--verify`: the registry holds nothing there.
    #[error("{dest} does not exist in the registry (this spec builds {built})")]
    Missing {
        /// The reference checked.
        dest: String,
        /// What the spec builds.
        built: Digest,
    },
}

/// What was built: the top manifest (the image, or the index), and each
/// image with its SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The image's manifest digest, or the index's with several specs.
    pub top: Digest,
    /// Whether `top` is an index over `images`.
    pub index: bool,
    /// Each platform image and its SBOM manifest.
    pub images: Vec<(Digest, Option<Digest>)>,
}

/// Build every spec (and its SBOM unless `sbom` is false) into `layout`;
/// with `index`, tie them together in an index. The top manifest is
/// tagged `tag` there.
pub fn build_set(
    specs: &[ImageSpec],
    opts: &BuildOptions,
    layout: &ImageLayout,
    tag: Option<&str>,
    index: bool,
    sbom: bool,
) -> Result<Built, PublishError> {
    if specs.len() > 1 && !index {
        return Err(PublishError::NeedsIndex(specs.len()));
    }
    let mut images = Vec::new();
    let image_tag = if index { None } else { tag };
    for spec in specs {
        let image = build_image(spec, opts, layout, image_tag)?;
        let size = image.manifest.len() as u64;
        let sbom = sbom
            .then(|| write_sbom(spec, layout, &image.manifest_digest, size))
            .transpose()?;
        images.push((image, sbom));
    }
    let top = if index {
        let entries: Vec<_> = specs.iter().zip(images.iter().map(|(i, _)| i)).collect();
        write_index(layout, &entries, tag)?
    } else {
        images[0].0.manifest_digest.clone()
    };
    Ok(Built {
        top,
        index,
        images: images
            .into_iter()
            .map(|(i, s)| (i.manifest_digest, s))
            .collect(),
    })
}

impl Built {
    /// Every manifest: the top one, each image, each SBOM.
    pub fn manifests(&self) -> Vec<&Digest> {
        let mut out = vec![&self.top];
        for (image, sbom) in &self.images {
            if image != &self.top {
                out.push(image);
            }
            out.extend(sbom);
        }
        out
    }

    /// Hard-link (or copy) everything this needs from `from` into `to`, and
    /// name the top manifest `tag` there.
    pub fn copy_to(
        &self,
        from: &ImageLayout,
        to: &ImageLayout,
        tag: &str,
    ) -> Result<(), PublishError> {
        let mut blobs: Vec<Digest> = Vec::new();
        for m in self.manifests() {
            blobs.push(m.clone());
            let parsed = Manifest::parse(&from.read_blob(m)?, None)?;
            blobs.extend(parsed.blobs()?.into_iter().map(|b| b.digest));
        }
        for d in &blobs {
            let (src, dst) = (from.blob_path(d), to.blob_path(d));
            if !dst.exists() && std::fs::hard_link(&src, &dst).is_err() {
                let f = std::fs::File::open(&src).map_err(|source| LayoutError::Io {
                    op: "open",
                    path: src.clone(),
                    source,
                })?;
                to.write_blob_from(f, Some(d))?;
            }
        }
        let top = from.read_blob(&self.top)?;
        let media_type = if self.index {
            berth_oci::spec::MediaType::ImageIndex
        } else {
            berth_oci::spec::MediaType::ImageManifest
        };
        let descriptor = berth_oci::spec::Descriptor::new(
            media_type,
            top.len() as u64,
            berth_oci::spec::Digest::from(&self.top),
        );
        to.add_manifest(descriptor, Some(tag))?;
        Ok(())
    }

    /// Push everything to `dest` from `layout`: each platform image (by
    /// digest) before the index that names it, the top manifest as
    /// `dest`, then the SBOMs (by digest; their subject exists by then).
    /// What the registry has is skipped; the report adds up every push.
    pub fn push(
        &self,
        client: &Client,
        layout: &ImageLayout,
        dest: &Reference,
    ) -> Result<PushReport, PublishError> {
        let by_digest = |d: &Digest| -> Reference {
            format!("{}/{}@{d}", dest.registry(), dest.repository())
                .parse()
                .unwrap_or_else(|e| unreachable!("a pushed reference with a digest parses: {e}"))
        };
        let mut total = PushReport::default();
        let mut add = |r: PushReport| {
            total.uploaded.extend(r.uploaded);
            total.mounted.extend(r.mounted);
            total.skipped.extend(r.skipped);
            total.bytes += r.bytes;
        };
        if self.index {
            for (image, _) in &self.images {
                add(client.push_image(layout, image, &by_digest(image))?);
            }
        }
        add(client.push_image(layout, &self.top, dest)?);
        for (image, sbom) in &self.images {
            if let Some(sbom) = sbom {
                let report =
                    client
                        .push_image(layout, sbom, &by_digest(sbom))
                        .map_err(|source| PublishError::Sbom {
                            image: image.clone(),
                            source,
                        })?;
                add(report);
            }
        }
        Ok(total)
    }
}

/// Check that the registry holds exactly `built` at `dest`.
pub fn verify(client: &Client, built: &Digest, dest: &Reference) -> Result<(), PublishError> {
    let found = client.manifest_digest(
        dest.registry(),
        dest.repository(),
        &dest.manifest_reference(),
    )?;
    match found {
        Some(d) if &d == built => Ok(()),
        Some(found) => Err(PublishError::Differs {
            dest: dest.to_string(),
            found,
            built: built.clone(),
        }),
        None => Err(PublishError::Missing {
            dest: dest.to_string(),
            built: built.clone(),
        }),
    }
}
