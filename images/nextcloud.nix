# Nextcloud: nginx on 8080 in front of PHP-FPM, both as the non-root user
# nextcloud (1000); config, apps and data live in the /var/lib/nextcloud
# volume (NEXTCLOUD_CONFIG_DIR), the code stays read-only in the store.
# A small bash script starts PHP-FPM and then nginx in the foreground.
{
  pkgs,
  berthLib,
  common,
  ...
}:
let
  nextcloud = pkgs.nextcloud31;
  php = pkgs.php83.buildEnv {
    extensions = { enabled, all }: enabled ++ [ all.apcu all.redis all.imagick ];
    extraConfig = ''
      memory_limit = 512M
      upload_max_filesize = 16G
      post_max_size = 16G
      output_buffering = 0
      apc.enable_cli = 1
      opcache.interned_strings_buffer = 16
    '';
  };
  state = "/var/lib/nextcloud";
  fpmConf = berthLib.writeText "php-fpm.conf" ''
    [global]
    error_log = /proc/self/fd/2
    daemonize = no

    [www]
    listen = 127.0.0.1:9000
    pm = dynamic
    pm.max_children = 16
    pm.start_servers = 2
    pm.min_spare_servers = 1
    pm.max_spare_servers = 4
    clear_env = no
    catch_workers_output = yes
  '';
  nginxConf = berthLib.writeText "nginx.conf" ''
    daemon off;
    pid /tmp/nginx.pid;
    error_log /proc/self/fd/2 info;
    events { worker_connections 1024; }
    http {
      include ${pkgs.nginx}/conf/mime.types;
      access_log /proc/self/fd/1;
      client_body_temp_path /tmp/nginx-body;
      fastcgi_temp_path /tmp/nginx-fastcgi;
      proxy_temp_path /tmp/nginx-proxy;
      uwsgi_temp_path /tmp/nginx-uwsgi;
      scgi_temp_path /tmp/nginx-scgi;
      client_max_body_size 16G;
      server {
        listen 8080;
        root ${nextcloud};
        index index.php;
        location = /robots.txt { allow all; access_log off; }
        location ^~ /.well-known {
          location = /.well-known/carddav { return 301 /remote.php/dav/; }
          location = /.well-known/caldav { return 301 /remote.php/dav/; }
          return 301 /index.php$request_uri;
        }
        location ~ ^/(?:build|tests|config|lib|3rdparty|templates|data)(?:$|/) { return 404; }
        location ~ ^/(?:\.|autotest|occ|issue|indie|db_|console) { return 404; }
        location ~ \.php(?:$|/) {
          fastcgi_split_path_info ^(.+?\.php)(/.*)$;
          include ${pkgs.nginx}/conf/fastcgi_params;
          fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
          fastcgi_param PATH_INFO $fastcgi_path_info;
          fastcgi_param modHeadersAvailable true;
          fastcgi_param front_controller_active true;
          fastcgi_pass 127.0.0.1:9000;
          fastcgi_read_timeout 3600;
        }
        location / { try_files $uri $uri/ /index.php$request_uri; }
      }
    }
  '';
  start = berthLib.writeText "nextcloud-start" ''
    set -eu
    mkdir -p ${state}/config ${state}/data ${state}/apps
    ${php}/bin/php-fpm --fpm-config ${fpmConf} --nodaemonize &
    exec ${pkgs.nginx}/bin/nginx -c ${nginxConf} -e /proc/self/fd/2
  '';
in
berthLib.buildImage {
  name = "nextcloud";
  contents = [
    php
    pkgs.bash
    pkgs.coreutils
  ];
  users = [
    {
      name = "nextcloud";
      uid = 1000;
      home = state;
    }
  ];
  config = {
    Entrypoint = [
      "${pkgs.bash}/bin/bash"
      "${start}"
    ];
    Env = common.env ++ [
      "NEXTCLOUD_CONFIG_DIR=${state}/config"
      "PATH=/bin"
    ];
    ExposedPorts."8080/tcp" = { };
    Volumes.${state} = { };
    User = "1000:1000";
    WorkingDir = "${nextcloud}";
  };
  extraFiles = common.files;
  annotations = common.annotations "nextcloud" nextcloud;
}
