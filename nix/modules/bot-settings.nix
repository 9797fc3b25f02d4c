# The `berth bot` config file the bot module writes, as a pure function of
# the module's values (like registry-settings.nix): the tests render
# exactly this and check it with `berth bot --check-config`. The keys are
# those of bumper/src/bot.rs (BotConfig); docs/bumper.md lists them.
{
  listen ? "127.0.0.1:5002",
  stateDir ? "/var/lib/berth-bot",
  # The GitOps repository's git URL and the branch PRs target.
  remote,
  base ? "main",
  # null: branches are pushed but no pull request is opened.
  forge ? null, # { kind; url; repo; }
  # Where systemd puts the credentials.
  credentials ? "/run/credentials/berth-bot.service",
  webhooks ? true,
  # Extra settings merged over the rendered ones: debounce_ms, retry_ms,
  # git.group, git.prefix, registry.*, poll.*.
  settings ? { },
}:
let
  toTOML = import ../lib/toml.nix;
  merge = import ../lib/merge.nix;
in
toTOML (
  merge (
    {
      inherit listen;
      state_dir = stateDir;
      git = { inherit remote base; };
    }
    // (if webhooks then { secret_file = "${credentials}/webhook-secret"; } else { })
    // (
      if forge == null then
        { }
      else
        {
          forge = forge // {
            token_file = "${credentials}/forge-token";
          };
        }
    )
  ) settings
)
