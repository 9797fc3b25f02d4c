# NixOS module for the registry, `berth serve`: a systemd service with its
# config rendered from options (by registry-settings.nix, which the tests
# check against the binary), its data in a state directory, credentials
# loaded from files through systemd, and an optional firewall opening.
#
# Takes the berth flake (for its package) and returns the module.
flake:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.berth-registry;
  configFile = pkgs.writeText "berth-serve.toml" (
    import ./registry-settings.nix {
      inherit (cfg) listenAddress port settings;
      dataDir = "/var/lib/${cfg.stateDirectory}";
    }
  );
in
{
  options.services.berth-registry = {
    enable = lib.mkEnableOption "the berth OCI registry (berth serve)";

    package = lib.mkOption {
      type = lib.types.package;
      default = flake.packages.${pkgs.stdenv.hostPlatform.system}.berth;
      defaultText = lib.literalExpression "berth.packages.\${system}.berth";
      description = "The berth package.";
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      description = "Address to listen on (an IPv6 address without brackets).";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 5000;
      description = "TCP port of the registry API (/v2/) and /metrics.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open `port` in the firewall.";
    };

    stateDirectory = lib.mkOption {
      type = lib.types.str;
      default = "berth";
      description = "Directory under /var/lib for blobs, uploads and the SQLite metadata.";
    };

    settings = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
      example = {
        storage.fsync = true;
        limits.max_manifest_bytes = 4194304;
        log.level = "info,berth_registry=debug";
      };
      description = ''
        Settings merged into the generated config file (TOML; tables as
        nested attribute sets). See docs/nix.md for the keys; the file is
        checked with `berth serve --check-config` when the system is built.
      '';
    };

    credentialFiles = lib.mkOption {
      type = lib.types.attrsOf lib.types.path;
      default = { };
      example = {
        s3-secret-access-key = "/run/secrets/berth-s3-secret";
      };
      description = ''
        Secrets handed to the service by systemd (LoadCredential): each name
        is readable by the service at $CREDENTIALS_DIRECTORY/<name>, never
        world-readable and never in the Nix store (S3 and TLS keys).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.berth-registry = {
      description = "berth OCI registry";
      wantedBy = [ "multi-user.target" ];
      # A PostgreSQL on the same host ([metadata]) starts first.
      after = [
        "network-online.target"
        "postgresql.service"
      ];
      # A replica whose database or bucket is not up yet keeps retrying
      # (every 5 s) instead of hitting systemd's start limit.
      startLimitIntervalSec = 0;
      wants = [ "network-online.target" ];
      serviceConfig = {
        ExecStartPre = "${cfg.package}/bin/berth serve --config ${configFile} --check-config";
        ExecStart = "${cfg.package}/bin/berth serve --config ${configFile}";
        DynamicUser = true;
        StateDirectory = cfg.stateDirectory;
        WorkingDirectory = "/var/lib/${cfg.stateDirectory}";
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") cfg.credentialFiles;
        Restart = "on-failure";
        RestartSec = 5;
        # berth serve drains in-flight uploads on SIGTERM.
        KillSignal = "SIGTERM";
        TimeoutStopSec = 60;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        LimitNOFILE = 65536;
      };
    };
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];
  };
}
