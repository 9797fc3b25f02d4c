# What every homelab image carries: CA certificates and time zone data
# where programs look for them, the environment that points at them, and
# the annotations that say where the image came from.
{ pkgs }:
let
  bundle = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
in
{
  files = [
    {
      type = "symlink";
      path = "/etc/ssl/certs/ca-certificates.crt";
      target = bundle;
    }
    {
      type = "symlink";
      path = "/etc/ssl/certs/ca-bundle.crt";
      target = bundle;
    }
    {
      type = "symlink";
      path = "/usr/share/zoneinfo";
      target = "${pkgs.tzdata}/share/zoneinfo";
    }
    {
      type = "symlink";
      path = "/etc/localtime";
      target = "${pkgs.tzdata}/share/zoneinfo/UTC";
    }
  ];
  env = [
    "SSL_CERT_FILE=${bundle}"
    "NIX_SSL_CERT_FILE=${bundle}"
    "TZDIR=${pkgs.tzdata}/share/zoneinfo"
    "TZ=UTC"
  ];
  annotations = title: package: {
    "org.opencontainers.image.title" = title;
    "org.opencontainers.image.version" = package.version or "unknown";
    "org.opencontainers.image.source" = "https://github.com/berth-dev/berth/tree/main/images";
  };
}
