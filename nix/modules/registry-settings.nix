# The `berth serve` config file the registry module writes, as a pure
# function of the module's values: kept apart from the module so the tests
# (which have no nixpkgs, so no NixOS module system) render exactly this and
# check it with `berth serve --check-config`. The keys are those of
# registry/src/config.rs; anything in `settings` goes in as given.
{
  # Address and port `berth serve` listens on.
  listenAddress ? "0.0.0.0",
  port ? 5000,
  # Data directory (blobs, uploads, SQLite metadata).
  dataDir ? "/var/lib/berth",
  # Extra settings merged over the rendered ones (nested attribute sets
  # become TOML tables): storage.fsync, limits.*, log.*.
  settings ? { },
}:
let
  toTOML = import ../lib/toml.nix;
  merge = import ../lib/merge.nix;
  listen =
    if builtins.match ".*:.*" listenAddress != null then
      "[${listenAddress}]:${toString port}"
    else
      "${listenAddress}:${toString port}";
  base = {
    inherit listen;
    data = dataDir;
    log = {
      # journald adds its own timestamps; JSON keeps fields machine-readable.
      format = "json";
      level = "info";
    };
  };
in
toTOML (merge base settings)
