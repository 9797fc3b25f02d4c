# The berth binary, built from this repository with nixpkgs' Rust tooling.
# Its C parts (ring, bundled SQLite, zstd) need only the compiler stdenv
# brings. Evaluated and built only with real nixpkgs (see docs/nix.md); the
# tests here replace it with the binary cargo built.
{
  lib,
  rustPlatform,
}:
rustPlatform.buildRustPackage {
  pname = "berth";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "--package"
    "berth"
  ];
  # The tests need skopeo, podman, containerd and a Nix store: they run in
  # CI (.ci/run), not in the Nix sandbox.
  doCheck = false;
  meta = {
    description = "Nix closures to reproducible OCI images, an OCI registry, a P2P node mirror and a GitOps digest bot";
    mainProgram = "berth";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
