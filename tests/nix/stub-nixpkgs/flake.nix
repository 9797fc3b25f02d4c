# A stand-in for nixpkgs, for berth's tests (nixpkgs cannot be downloaded
# here): `nix … --override-input nixpkgs path:<a copy of this directory>`.
# It supplies exactly what berth's flake.nix, nix/package.nix and images/
# use: `busybox` (a static busybox the test puts in ./bbdir), a real
# `callPackage`, a `rustPlatform.buildRustPackage` whose package wraps the
# binary cargo built (its path is in ./berth-bin), and small busybox-built
# packages with the names and files the images refer to. A real nixpkgs
# evaluates the same expressions with the real packages.
{
  outputs =
    { self }:
    let
      forSystem =
        system:
        let
          busybox = builtins.path {
            path = ./bbdir;
            name = "busybox-static";
          };
          bb = "${busybox}/bin/busybox";
          berthBin = builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./berth-bin);
          mk =
            name: script:
            builtins.derivation {
              inherit name system;
              builder = bb;
              args = [
                "sh"
                "-c"
                script
              ];
            };
          # A program `bin/<bin>` that prints its name and arguments.
          stub =
            name: bin:
            mk "${name}-stub" ''
              ${bb} mkdir -p $out/bin
              ${bb} printf '#!${bb} sh\necho ${name} "$@"\n' > $out/bin/${bin}
              ${bb} chmod 555 $out/bin/${bin}
            ''
            // {
              version = "0-stub";
            };
          pkgs = {
            inherit busybox;
            lib = {
              cleanSource = p: p;
              licenses.asl20 = "Apache-2.0";
              platforms.linux = [ system ];
            };
            callPackage =
              fn: overrides:
              let
                f = if builtins.isFunction fn then fn else import fn;
              in
              f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
            rustPlatform.buildRustPackage =
              attrs:
              mk "${attrs.pname}-${attrs.version}" ''
                ${bb} mkdir -p $out/bin
                ${bb} printf '#!${bb} sh\nexec ${berthBin} "$@"\n' > $out/bin/berth
                ${bb} chmod 555 $out/bin/berth
              ''
              // {
                inherit (attrs) version;
              };
            cacert = mk "cacert-stub" ''
              ${bb} mkdir -p $out/etc/ssl/certs
              ${bb} echo "# no certificates in the stub" > $out/etc/ssl/certs/ca-bundle.crt
            '';
            tzdata = mk "tzdata-stub" ''
              ${bb} mkdir -p $out/share/zoneinfo
              ${bb} echo "TZif stub" > $out/share/zoneinfo/UTC
            '';
            nginx = mk "nginx-stub" ''
              ${bb} mkdir -p $out/bin $out/conf
              ${bb} echo "types {}" > $out/conf/mime.types
              ${bb} echo "" > $out/conf/fastcgi_params
              ${bb} printf '#!${bb} sh\necho nginx "$@"\n' > $out/bin/nginx
              ${bb} chmod 555 $out/bin/nginx
            '';
            php83 = stub "php" "php-fpm" // {
              buildEnv = _: stub "php-env" "php-fpm";
            };
            ollama = stub "ollama" "ollama";
            forgejo = stub "forgejo" "forgejo";
            git = stub "git" "git";
            openssh = stub "openssh" "ssh";
            bash = mk "bash-stub" ''
              ${bb} mkdir -p $out/bin
              ${bb} ln -s ${bb} $out/bin/bash
            '';
            coreutils = stub "coreutils" "install";
            nextcloud31 = stub "nextcloud" "occ";
            calibre-web = stub "calibre-web" "calibre-web";
            jellyfin = stub "jellyfin" "jellyfin";
            jellyfin-ffmpeg = stub "jellyfin-ffmpeg" "ffmpeg";
          };
        in
        pkgs;
    in
    {
      legacyPackages.x86_64-linux = forSystem "x86_64-linux";
      legacyPackages.aarch64-linux = forSystem "aarch64-linux";
    };
}
