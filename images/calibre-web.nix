# calibre-web: the e-book web UI on 8083 as the non-root user calibre
# (1000); its settings database in the /data volume, the Calibre library
# mounted at /books.
{
  pkgs,
  berthLib,
  common,
  ...
}:
berthLib.buildImage {
  name = "calibre-web";
  contents = [ pkgs.calibre-web ];
  users = [
    {
      name = "calibre";
      uid = 1000;
      home = "/data";
    }
  ];
  config = {
    Entrypoint = [ "${pkgs.calibre-web}/bin/calibre-web" ];
    Cmd = [
      "-p"
      "/data/app.db"
      "-g"
      "/data/gdrive.db"
      "-i"
      "0.0.0.0"
    ];
    Env = common.env ++ [
      "HOME=/data"
      "CALIBRE_DBPATH=/data"
    ];
    ExposedPorts."8083/tcp" = { };
    Volumes = {
      "/data" = { };
      "/books" = { };
    };
    User = "1000:1000";
    WorkingDir = "/data";
  };
  extraFiles = common.files ++ [
    {
      type = "directory";
      path = "/books";
      mode = "0755";
      uid = 1000;
      gid = 1000;
    }
  ];
  annotations = common.annotations "calibre-web" pkgs.calibre-web;
}
