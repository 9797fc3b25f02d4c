# Forgejo: the web UI on 3000 and its built-in SSH server on 2222, as the
# non-root user git (1000); git and openssh inside (Forgejo runs git for
# every repository operation and ssh-keygen for its host keys). Everything
# it writes is under the /data volume.
{
  pkgs,
  berthLib,
  common,
  ...
}:
let
  appIni = berthLib.writeText "forgejo-app.ini" ''
    APP_NAME = Forgejo
    RUN_USER = git
    WORK_PATH = /data/gitea

    [server]
    HTTP_PORT = 3000
    START_SSH_SERVER = true
    SSH_LISTEN_PORT = 2222
    SSH_PORT = 22
    APP_DATA_PATH = /data/gitea

    [database]
    DB_TYPE = sqlite3
    PATH = /data/gitea/forgejo.db

    [repository]
    ROOT = /data/git/repositories

    [log]
    MODE = console
    LEVEL = Info

    [security]
    INSTALL_LOCK = false
  '';
  # First start: seed a writable app.ini (Forgejo writes its secrets into
  # it), then run the server in the foreground.
  start = berthLib.writeText "forgejo-start" ''
    set -eu
    if [ ! -e /data/gitea/conf/app.ini ]; then
      ${pkgs.coreutils}/bin/install -m 0600 ${appIni} /data/gitea/conf/app.ini
    fi
    exec ${pkgs.forgejo}/bin/forgejo web --config /data/gitea/conf/app.ini "$@"
  '';
in
berthLib.buildImage {
  name = "forgejo";
  contents = [
    pkgs.forgejo
    pkgs.git
    pkgs.openssh
    pkgs.bash
    pkgs.coreutils
  ];
  users = [
    {
      name = "git";
      uid = 1000;
      home = "/data/git";
      shell = "${pkgs.bash}/bin/bash";
    }
  ];
  config = {
    Entrypoint = [
      "${pkgs.bash}/bin/bash"
      "${start}"
    ];
    Env = common.env ++ [
      "USER=git"
      "HOME=/data/git"
      "GITEA_WORK_DIR=/data/gitea"
      "GITEA_CUSTOM=/data/gitea/custom"
      "PATH=/bin"
    ];
    ExposedPorts = {
      "3000/tcp" = { };
      "2222/tcp" = { };
    };
    Volumes."/data" = { };
    User = "1000:1000";
    WorkingDir = "/data";
  };
  extraFiles = common.files ++ [
    {
      type = "directory";
      path = "/data";
      mode = "0750";
      uid = 1000;
      gid = 1000;
    }
    {
      type = "directory";
      path = "/data/gitea";
      mode = "0750";
      uid = 1000;
      gid = 1000;
    }
    {
      type = "directory";
      path = "/data/gitea/conf";
      mode = "0750";
      uid = 1000;
      gid = 1000;
    }
  ];
  annotations = common.annotations "forgejo" pkgs.forgejo;
}
