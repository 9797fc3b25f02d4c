# berth itself: the registry (`berth serve`) on 5000 as the non-root user
# berth (1000), its blobs and metadata in the /var/lib/berth volume, its
# config rendered by the same function as the NixOS registry module's — so
# the cluster runs a registry image that berth built. The same image runs
# `berth mirror` and `berth bot` (deploy/ passes the subcommand), so it
# carries git, which the bot drives.
{
  pkgs,
  berthLib,
  berth,
  common,
  ...
}:
let
  serveToml = berthLib.writeText "berth-serve.toml" (
    import ../nix/modules/registry-settings.nix {
      dataDir = "/var/lib/berth";
    }
  );
in
berthLib.buildImage {
  name = "berth";
  contents = [
    berth
    pkgs.git
  ];
  users = [
    {
      name = "berth";
      uid = 1000;
      home = "/var/lib/berth";
    }
  ];
  config = {
    Entrypoint = [ "${berth}/bin/berth" ];
    Cmd = [
      "serve"
      "--config"
      "${serveToml}"
    ];
    Env = common.env ++ [
      "HOME=/var/lib/berth"
      "PATH=${berth}/bin:${pkgs.git}/bin"
    ];
    ExposedPorts."5000/tcp" = { };
    Volumes."/var/lib/berth" = { };
    User = "1000:1000";
    WorkingDir = "/var/lib/berth";
    StopSignal = "SIGTERM";
  };
  extraFiles = common.files;
  annotations = common.annotations "berth" berth;
}
