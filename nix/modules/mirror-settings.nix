# The `berth mirror` config file the mirror module writes, as a pure
# function of the module's values (like registry-settings.nix): the tests
# render exactly this and check it with `berth mirror --check-config`. The
# keys are those of mirror/src/config.rs.
{
  port ? 5001,
  dataDir ? "/var/lib/berth-mirror",
  # Registries (host[:port]) whose pulls go through the mirror.
  registries ? [ ],
  # Keys the module sets from its own options (peers, containerd_content).
  extra ? { },
  # Extra settings merged over the rendered ones: upstreams, cache.*,
  # upstream.*, log.*, containerd_config.
  settings ? { },
}:
let
  toTOML = import ../lib/toml.nix;
  merge = import ../lib/merge.nix;
in
toTOML (
  merge (
    {
      listen = "0.0.0.0:${toString port}";
      data = dataDir;
      inherit registries;
      log.format = "json";
    }
    // extra
  ) settings
)
