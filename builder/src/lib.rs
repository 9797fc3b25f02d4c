//! `berth-builder` turns a Nix store closure into a reproducible, layered OCI
//! image: it reads the image spec (closure graph, roots, config), plans layers
//! with a pure function of the graph, writes canonical tars, compresses them
//! with a pinned compressor, assembles config and manifest, and writes an OCI
//! layout or archive or pushes through the `berth-oci` client.
//!
//! Not built yet (issue "Builder"). It must never open a socket except
//! through the `berth-oci` client, and its output must be a pure function of
//! its input: same spec in, same bytes out, on any machine and thread count.
