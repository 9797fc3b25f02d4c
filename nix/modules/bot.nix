# NixOS module for the GitOps bot, `berth bot`: receives the registry's
# webhooks (or polls), rewrites image digests in a GitOps repository and
# opens or updates one pull request per target on Forgejo, Gitea or
# GitHub. The forge token and the webhook secret come from files through
# systemd credentials, never from the Nix store.
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
  cfg = config.services.berth-bot;
  configFile = pkgs.writeText "berth-bot.toml" (
    import ./bot-settings.nix {
      listen = "${cfg.listenAddress}:${toString cfg.port}";
      stateDir = "/var/lib/${cfg.stateDirectory}";
      remote = cfg.gitRemote;
      base = cfg.baseBranch;
      forge = {
        inherit (cfg.forge) kind url;
        repo = cfg.forge.repository;
      };
      webhooks = cfg.webhookSecretFile != null;
      inherit (cfg) settings;
    }
  );
in
{
  options.services.berth-bot = {
    enable = lib.mkEnableOption "the berth GitOps digest bot (berth bot)";

    package = lib.mkOption {
      type = lib.types.package;
      default = flake.packages.${pkgs.stdenv.hostPlatform.system}.berth;
      defaultText = lib.literalExpression "berth.packages.\${system}.berth";
      description = "The berth package.";
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      description = "Address for the registry's webhooks.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 5002;
      description = "Port for the registry's webhooks.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open `port` in the firewall.";
    };

    gitRemote = lib.mkOption {
      type = lib.types.str;
      example = "https://forgejo.lan/infra/gitops.git";
      description = "The GitOps repository's git URL (fetch and push; give git its credentials, e.g. a credential helper or a token in the URL from a file).";
    };

    baseBranch = lib.mkOption {
      type = lib.types.str;
      default = "main";
      description = "The branch pull requests target.";
    };

    forge = {
      kind = lib.mkOption {
        type = lib.types.enum [
          "forgejo"
          "gitea"
          "github"
        ];
        default = "forgejo";
        description = "The forge's API.";
      };
      url = lib.mkOption {
        type = lib.types.str;
        example = "https://forgejo.lan";
        description = "The forge's base URL.";
      };
      repository = lib.mkOption {
        type = lib.types.str;
        example = "infra/gitops";
        description = "The GitOps repository (owner/name).";
      };
      tokenFile = lib.mkOption {
        type = lib.types.path;
        description = "File holding the forge API token (read through systemd credentials).";
      };
    };

    webhookSecretFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "File holding the HMAC secret the registry signs its webhooks with; null to only poll (settings.poll).";
    };

    stateDirectory = lib.mkOption {
      type = lib.types.str;
      default = "berth-bot";
      description = "Directory under /var/lib for the bot's clone and state.";
    };

    settings = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
      description = "Settings merged into the generated `berth bot` config file (TOML): debounce_ms, retry_ms, git.group, registry.*, poll.* (see docs/bumper.md).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.berth-bot = {
      description = "berth GitOps digest bot";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      path = [ pkgs.git ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/berth bot --config ${configFile}";
        DynamicUser = true;
        StateDirectory = cfg.stateDirectory;
        ExecStartPre = "${cfg.package}/bin/berth bot --check-config --config ${configFile}";
        LoadCredential = [
          "forge-token:${cfg.forge.tokenFile}"
        ]
        ++ lib.optional (cfg.webhookSecretFile != null) "webhook-secret:${cfg.webhookSecretFile}";
        Restart = "on-failure";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
      };
    };
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];
  };
}
