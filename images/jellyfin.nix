# Jellyfin: the media server on 8096 as the non-root user jellyfin (1000),
# with nixpkgs' jellyfin-ffmpeg for transcoding; its state in the /config
# and /cache volumes, media read from /media.
{
  pkgs,
  berthLib,
  common,
  ...
}:
berthLib.buildImage {
  name = "jellyfin";
  contents = [ pkgs.jellyfin ];
  users = [
    {
      name = "jellyfin";
      uid = 1000;
      home = "/config";
    }
  ];
  config = {
    Entrypoint = [ "${pkgs.jellyfin}/bin/jellyfin" ];
    Cmd = [
      "--datadir"
      "/config/data"
      "--configdir"
      "/config/config"
      "--logdir"
      "/config/log"
      "--cachedir"
      "/cache"
      "--ffmpeg"
      "${pkgs.jellyfin-ffmpeg}/bin/ffmpeg"
    ];
    Env = common.env ++ [ "HOME=/config" ];
    ExposedPorts = {
      "8096/tcp" = { };
      # Client discovery.
      "7359/udp" = { };
    };
    Volumes = {
      "/config" = { };
      "/cache" = { };
      "/media" = { };
    };
    User = "1000:1000";
    WorkingDir = "/config";
  };
  extraFiles = common.files ++ [
    {
      type = "directory";
      path = "/cache";
      mode = "0750";
      uid = 1000;
      gid = 1000;
    }
    {
      type = "directory";
      path = "/media";
      mode = "0755";
    }
  ];
  annotations = common.annotations "jellyfin" pkgs.jellyfin;
}
