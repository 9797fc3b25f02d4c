//! `berth-builder` turns a Nix store closure into a reproducible, layered OCI
//! image: it reads the image spec (closure graph, roots, config), plans layers
//! with a pure function of the graph, writes canonical tars, compresses them
//! with a pinned compressor, assembles config and manifest, and writes an OCI
//! layout or archive or pushes through the `berth-oci` client.
//!
//! It must never open a socket except through the `berth-oci` client, and
//! its output must be a pure function of its input: same spec in, same bytes
//! out, on any machine and thread count.
//!
//! # Layout
//! - [`spec`]: the image spec (version 1) and its validation.
//! - [`plan`]: the layer plan, a pure function of the closure graph.
//! - [`canonical_tar`]: the one tar byte stream a layer's files become.
//! - [`compress`]: pinned block-parallel gzip/zstd with a compressor id.
//! - [`image`]: an image's layers (in parallel, each in one pass) and
//!   documents into an OCI image layout.
//! - [`jobs`]: the layer jobs of a plan, their cache keys and entries, and
//!   the parallel runner (shared with [`stream`]).
//! - [`manifest`]: config, manifest, descriptor and index JSON.
//! - [`archive`]: reproducible `oci-archive` and `docker-archive` files.
//! - [`stream`]: uncompressed images streamed straight into an archive,
//!   layers written in parallel at offsets known in advance.
//! - [`publish`]: several specs built into one layout with their SBOMs and
//!   an index, copied to more layouts, pushed child → index → SBOM, and
//!   verified against a registry.
//! - [`sbom`]: the CycloneDX SBOM, attached as an OCI 1.1 referrer.
//! - [`cache`]: layer descriptors keyed by store paths' narHashes, tar
//!   format and compressor id.
//!
//! Pushing goes through `berth_oci::client` ([`publish`]); progress goes to an optional
//! [`image::BuildProgress`] receiver (the CLI draws bars with it).

pub mod archive;
pub mod base;
pub mod cache;
pub mod canonical_tar;
pub mod compress;
pub mod image;
pub mod jobs;
pub mod manifest;
pub mod plan;
pub mod publish;
pub mod sbom;
pub mod spec;
pub mod stream;

pub use image::{BuildError, BuildOptions, BuiltImage, build_image};
pub use manifest::write_index;
pub use plan::{LayerPlan, PlannedLayer, plan_layers};
pub use spec::{ImageSpec, SpecError};
