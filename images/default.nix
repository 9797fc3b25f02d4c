# The homelab's images, written with berth's Nix library (nix/lib). Each
# file is one image; `nix run .#build-image -- <name>` builds one, and
# `legacyPackages.<system>.images.<name>` is its image spec.
{
  pkgs,
  # berth's Nix library, imported for this system.
  berthLib,
  # The berth package (for the berth image).
  berth,
}:
let
  common = import ./common.nix { inherit pkgs; };
  args = {
    inherit
      pkgs
      berthLib
      berth
      common
      ;
  };
in
{
  ollama = import ./ollama.nix args;
  forgejo = import ./forgejo.nix args;
  nextcloud = import ./nextcloud.nix args;
  calibre-web = import ./calibre-web.nix args;
  jellyfin = import ./jellyfin.nix args;
  berth = import ./berth.nix args;
}
