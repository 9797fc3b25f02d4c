# NixOS module for the node mirror, `berth mirror`: a P2P pull-through
# mirror on every node, and the container runtime configuration that sends
# pulls through it — containerd's hosts.toml (config_path) and, on k3s
# nodes, /etc/rancher/k3s/registries.yaml. If the mirror is down,
# containerd falls back to the registry itself.
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
  cfg = config.services.berth-mirror;
  mirrorUrl = "http://127.0.0.1:${toString cfg.port}";
  configFile = pkgs.writeText "berth-mirror.toml" (
    import ./mirror-settings.nix {
      inherit (cfg) port registries settings;
      dataDir = "/var/lib/${cfg.stateDirectory}";
      extra = {
        inherit (cfg) peers;
      }
      // lib.optionalAttrs (cfg.advertiseUrl != null) {
        advertise_url = cfg.advertiseUrl;
      }
      // lib.optionalAttrs cfg.p2p.enable {
        p2p = {
          listen = "/ip4/0.0.0.0/tcp/${toString cfg.p2p.port}";
          inherit (cfg.p2p) bootstrap;
        }
        // lib.optionalAttrs (cfg.p2p.keyFile != null) {
          key_file = "/run/credentials/berth-mirror.service/p2p-key";
        };
      }
      // lib.optionalAttrs (cfg.containerd.enable || cfg.k3s.enable) {
        containerd_content =
          if cfg.k3s.enable then
            "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content"
          else
            "/var/lib/containerd/io.containerd.content.v1.content";
      };
    }
  );
  # containerd: one hosts.toml per mirrored registry, as `berth mirror
  # hosts-config` writes it.
  hostsToml = registry: ''
    server = "${if registry == "docker.io" then "https://registry-1.docker.io" else "https://${registry}"}"

    [host."${mirrorUrl}"]
      capabilities = ["pull", "resolve"]
      dial_timeout = "200ms"
  '';
in
{
  options.services.berth-mirror = {
    enable = lib.mkEnableOption "the berth P2P node mirror (berth mirror)";

    package = lib.mkOption {
      type = lib.types.package;
      default = flake.packages.${pkgs.stdenv.hostPlatform.system}.berth;
      defaultText = lib.literalExpression "berth.packages.\${system}.berth";
      description = "The berth package.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 5001;
      description = "Port of the mirror's registry API (containerd pulls from 127.0.0.1 here; peers fetch layers here).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open `port` so peers can fetch layers from this node.";
    };

    peers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "http://10.0.0.3:5001" ];
      description = "Other nodes' mirrors, asked for content by digest before the registry.";
    };

    p2p = {
      enable = lib.mkEnableOption "peer discovery with libp2p Kademlia instead of the `peers` list";
      port = lib.mkOption {
        type = lib.types.port;
        default = 5003;
        description = "libp2p TCP port.";
      };
      bootstrap = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "/dns4/node1.lan/tcp/5003" ];
        description = "Multiaddrs to join through.";
      };
      keyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        description = "The cluster's private-network key (64 hex digits, the same on every node; `openssl rand -hex 32`). Nodes without it cannot connect.";
      };
    };

    advertiseUrl = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "http://10.0.0.2:5001";
      description = "This node's mirror as the other nodes list it in `peers`; with it, one node fetches each cold blob from the registry for the cluster.";
    };

    registries = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [
        "registry.lan:5000"
        "docker.io"
      ];
      description = "Registries (host[:port]) whose pulls go through the mirror.";
    };

    stateDirectory = lib.mkOption {
      type = lib.types.str;
      default = "berth-mirror";
      description = "Directory under /var/lib for the mirror's cached blobs.";
    };

    settings = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
      description = "Settings merged into the generated `berth mirror` config file (TOML).";
    };

    containerd.enable = lib.mkOption {
      type = lib.types.bool;
      default = config.virtualisation.containerd.enable;
      defaultText = lib.literalExpression "config.virtualisation.containerd.enable";
      description = "Point containerd at the mirror (hosts.toml under /etc/containerd/certs.d).";
    };

    k3s.enable = lib.mkOption {
      type = lib.types.bool;
      default = config.services.k3s.enable;
      defaultText = lib.literalExpression "config.services.k3s.enable";
      description = "Point k3s's embedded containerd at the mirror (/etc/rancher/k3s/registries.yaml).";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        systemd.services.berth-mirror = {
          description = "berth P2P node mirror";
          wantedBy = [ "multi-user.target" ];
          after = [ "network-online.target" ];
          wants = [ "network-online.target" ];
          before = [
            "containerd.service"
            "k3s.service"
          ];
          serviceConfig = {
            # Reads containerd's content store (root-owned) as a source;
            # "-": the path may not exist on this node.
            ReadOnlyPaths = [
              "-/var/lib/containerd"
              "-/var/lib/rancher/k3s/agent/containerd"
            ];
            LoadCredential = lib.optional (cfg.p2p.keyFile != null) "p2p-key:${cfg.p2p.keyFile}";
            ExecStartPre = "${cfg.package}/bin/berth mirror --config ${configFile} --check-config";
            ExecStart = "${cfg.package}/bin/berth mirror --config ${configFile}";
            # root, read-only: containerd's content store is root's.
            StateDirectory = cfg.stateDirectory;
            Restart = "always";
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
            LimitNOFILE = 65536;
          };
        };
        networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall (
          [ cfg.port ] ++ lib.optional cfg.p2p.enable cfg.p2p.port
        );
      }
      (lib.mkIf cfg.containerd.enable {
        virtualisation.containerd.settings.plugins."io.containerd.grpc.v1.cri".registry.config_path =
          "/etc/containerd/certs.d";
        environment.etc = builtins.listToAttrs (
          map (r: {
            name = "containerd/certs.d/${r}/hosts.toml";
            value.text = hostsToml r;
          }) cfg.registries
        );
      })
      (lib.mkIf cfg.k3s.enable {
        environment.etc."rancher/k3s/registries.yaml".text = builtins.toJSON {
          # YAML is a superset of JSON.
          mirrors = builtins.listToAttrs (
            map (r: {
              name = r;
              value.endpoint = [ mirrorUrl ];
            }) cfg.registries
          );
        };
      })
    ]
  );
}
