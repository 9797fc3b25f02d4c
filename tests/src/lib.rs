//! `berth-tests` holds the end-to-end suites (in `tests/e2e/`) that start the
//! real `berth` binary and real third-party programs — skopeo, umoci, podman,
//! containerd, the oras Python SDK — against it. This library part owns the
//! harness those suites share: finding the binary, starting a server on
//! `127.0.0.1:0` and reading the address it printed, and locating peer
//! programs with a failure message that names their install step.
//!
//! Tests here reach nothing but 127.0.0.0/8 and network namespaces they
//! create and delete themselves.
