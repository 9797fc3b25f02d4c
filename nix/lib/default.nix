# berth's Nix library: container images as image-spec derivations.
#
# `buildImage { name, contents, config, ... }` evaluates to a derivation
# whose output is an image spec (docs/image-spec.md), not an image: the
# closure comes from `exportReferencesGraph` with structured attrs, so no
# layer tarball is ever written to the store, and `berth build` turns the
# spec into a reproducible layered OCI image whose digests are known before
# anything is pushed. Argument names follow `dockerTools.buildLayeredImage`
# where they mean the same thing. Only builtins are used, so this file
# evaluates with or without nixpkgs; `busybox` (any busybox with
# `bin/busybox`, e.g. nixpkgs' `pkgs.busybox`) is the only build tool.
{
  busybox,
  # The berth package, for `mkBuildImageApp`.
  berth ? null,
  system ? busybox.system or builtins.currentSystem,
}:
let
  bb = "${busybox}/bin/busybox";

  # Go's names for Nix's CPUs, as OCI platforms use them.
  goArch =
    {
      "x86_64-linux" = "amd64";
      "aarch64-linux" = "arm64";
      "armv7l-linux" = "arm";
      "i686-linux" = "386";
      "riscv64-linux" = "riscv64";
      "powerpc64le-linux" = "ppc64le";
      "s390x-linux" = "s390x";
    }
    .${system} or (throw "berth: no OCI architecture known for Nix system ${system}");

  concatLines = lines: builtins.concatStringsSep "\n" lines + "\n";

  # A derivation whose output is the file `text`, built by busybox alone.
  writeText =
    name: text:
    builtins.derivation {
      inherit name text system;
      builder = bb;
      args = [
        "sh"
        "-c"
        ''${bb} cp "$textPath" "$out"''
      ];
      passAsFile = [ "text" ];
      preferLocalBuild = true;
      allowSubstitutes = false;
    };

  # /etc/passwd and /etc/group for root, `users` and nobody.
  accountFiles =
    users:
    let
      entry =
        u:
        let
          uid = toString u.uid;
          gid = toString (u.gid or u.uid);
        in
        {
          passwd = "${u.name}:x:${uid}:${gid}:${u.description or u.name}:${u.home or "/var/empty"}:${u.shell or "/sbin/nologin"}";
          group = "${u.group or u.name}:x:${gid}:";
        };
      entries = map entry users;
    in
    [
      {
        type = "file";
        path = "/etc/passwd";
        contents = concatLines (
          [ "root:x:0:0:root:/root:/sbin/nologin" ]
          ++ map (e: e.passwd) entries
          ++ [ "nobody:x:65534:65534:nobody:/var/empty:/sbin/nologin" ]
        );
      }
      {
        type = "file";
        path = "/etc/group";
        contents = concatLines (
          [ "root:x:0:" ] ++ map (e: e.group) entries ++ [ "nogroup:x:65534:" ]
        );
      }
    ]
    ++ builtins.concatMap (
      u:
      if u ? home then
        [
          {
            type = "directory";
            path = u.home;
            mode = "0750";
            uid = u.uid;
            gid = u.gid or u.uid;
          }
        ]
      else
        [ ]
    ) users;

  buildImage =
    {
      # Image name (without registry or tag); names the spec derivation.
      name,
      # Tag used by `nix run .#build-image` when none is given.
      tag ? "latest",
      # Store paths whose trees are linked into `/` (bin, etc, share, …),
      # like dockerTools' `contents`: a directory per directory, a symlink
      # per file.
      contents ? [ ],
      # More store paths to include without linking them into `/`. Every
      # store path the config or extra files mention is included anyway.
      roots ? [ ],
      # The OCI runtime config, with OCI's field names: Entrypoint, Cmd,
      # Env, ExposedPorts, Volumes, User, WorkingDir, Labels, StopSignal.
      config ? { },
      # Non-root accounts: [{ name; uid; gid ? uid; home ? ; group ? name; }].
      # Writes /etc/passwd and /etc/group (with root and nobody) and each
      # `home` owned by its user.
      users ? [ ],
      # /tmp with mode 1777.
      tmp ? true,
      # Files outside the store: { type = "file"; path; contents; mode ? ;
      # uid ? ; gid ? ; }, { type = "directory"; path; mode ? ; uid ? ;
      # gid ? ; } or { type = "symlink"; path; target; }.
      extraFiles ? [ ],
      # Layering (docs/layering.md).
      maxLayers ? 100,
      minLayerSize ? 0,
      layerGroups ? [ ],
      previousLayers ? [ ],
      architecture ? goArch,
      os ? "linux",
      # Fixed, so the image is reproducible.
      created ? "1970-01-01T00:00:01Z",
      # Manifest annotations (org.opencontainers.image.source, …).
      annotations ? { },
      # A base image: a `pullImage` result, or a reference pinned by digest
      # ("registry/repo:tag@sha256:…", which `berth build` then fetches).
      # Its layers go under the closure's, byte for byte
      # (docs/image-spec.md, "fromImage").
      fromImage ? null,
    }:
    let
      files =
        (if tmp then
          [
            {
              type = "directory";
              path = "/tmp";
              mode = "1777";
            }
          ]
        else
          [ ])
        ++ (if users == [ ] then [ ] else accountFiles users)
        ++ extraFiles;
      spec = {
        version = 1;
        inherit
          name
          config
          architecture
          os
          created
          annotations
          ;
        contents = map toString contents;
        extraFiles = files;
        layering = {
          inherit maxLayers minLayerSize;
          groups = map (g: map toString g) layerGroups;
          previous = map toString previousLayers;
        };
      };
      # Everything the spec mentions, written to one store file: Nix's
      # reference scan of it finds every store path the image needs (the
      # config's too), and berth takes its references as the roots and
      # leaves the file itself out of the image.
      carrier = writeText "${name}-image-roots" (
        builtins.toJSON {
          inherit spec;
          roots = map toString roots;
        }
      );
    in
    builtins.derivation {
      name = "${name}-image-spec.json";
      inherit system;
      __structuredAttrs = true;
      exportReferencesGraph.closure = [ carrier ];
      # The base is named here, not in the carrier: the build depends on
      # it, but it is not part of the image's closure.
      berthSpec =
        spec
        // {
          rootsFrom = "${carrier}";
        }
        // (
          if fromImage == null then
            { }
          else if builtins.isString fromImage then
            { fromImage.reference = fromImage; }
          else
            {
              fromImage = {
                reference = fromImage.imageReference;
                layout = "${fromImage}";
              };
            }
        );
      builder = bb;
      # The spec is the derivation's own .attrs.json (berth reads the
      # `berthSpec` and `closure` keys of it); busybox sh reads $out from
      # .attrs.sh.
      args = [
        "sh"
        "-c"
        ''
          out=$(${bb} sed -n "s/.*\[.out.\]='\([^']*\)'.*/\1/p" .attrs.sh)
          ${bb} cp .attrs.json "$out"
        ''
      ];
      preferLocalBuild = true;
      allowSubstitutes = false;
    }
    // {
      imageName = name;
      imageTag = tag;
    };

  # A base image fetched by berth into an OCI image layout in the store, as
  # a fixed-output derivation (dockerTools.pullImage's argument names):
  # the layout is what the digest names, so its `hash` is the same on any
  # machine, and a wrong one fails the build with Nix's own message. Only
  # the image for `os`/`arch` is fetched from an index.
  pullImage =
    {
      imageName,
      imageDigest,
      hash,
      os ? "linux",
      arch ? goArch,
      # false: plain HTTP (a loopback registry falls back to it by itself).
      tlsVerify ? true,
      finalImageName ? imageName,
      finalImageTag ? "latest",
    }:
    if berth == null then
      throw "berth: pullImage needs the berth package (import nix/lib { berth = …; })"
    else
      builtins.derivation {
        name =
          let
            base = builtins.baseNameOf finalImageName;
          in
          "${base}-${finalImageTag}-oci";
        inherit system;
        builder = bb;
        args = [
          "sh"
          "-c"
          ''
            # Impure variables the daemon does not have arrive empty.
            [ -n "''${SSL_CERT_FILE:-}" ] || unset SSL_CERT_FILE
            [ -n "''${REGISTRY_AUTH_FILE:-}" ] || unset REGISTRY_AUTH_FILE
            exec ${berth}/bin/berth pull "${imageName}@${imageDigest}" \
              --os ${os} --arch ${arch} ${if tlsVerify then "" else "--plain-http"} \
              -o "oci:$out"
          ''
        ];
        outputHashMode = "recursive";
        outputHash = hash;
        preferLocalBuild = true;
        # The registry's credentials and certificates, when the caller set
        # them in the environment of the Nix daemon.
        impureEnvVars = [
          "REGISTRY_AUTH_FILE"
          "SSL_CERT_FILE"
        ];
      }
      // {
        imageReference = "${imageName}@${imageDigest}";
      };

  # A `nix run` program that builds one of `images` (an attribute set of
  # buildImage results) with `berth build`:
  #   build-image <image> [--push REF | -o oci:DIR | any berth build flag]
  # Only the chosen image's spec is built (the others are only evaluated).
  mkBuildImageApp =
    {
      images,
      name ? "build-image",
    }:
    let
      names = builtins.attrNames images;
      cases = builtins.concatStringsSep "\n" (
        map (
          n:
          # The .drv, not its output: building the app builds no image.
          "  ${n}) drv=${builtins.unsafeDiscardOutputDependency images.${n}.drvPath}; tag=${images.${n}.imageTag or "latest"} ;;"
        ) names
      );
      script = ''
        #!${bb} sh
        set -eu
        usage() {
          echo "usage: ${name} <image> [--push REGISTRY/REPO[:TAG] | -o oci:DIR | berth build flags]"
          echo "images: ${builtins.concatStringsSep " " names}"
        }
        if [ $# -lt 1 ]; then usage >&2; exit 2; fi
        image=$1; shift
        case "$image" in
        -h|--help) usage; exit 0 ;;
        ${cases}
        *) echo "${name}: no image named '$image'; images: ${builtins.concatStringsSep " " names}" >&2; exit 2 ;;
        esac
        spec=$(nix-store --realise "$drv" --quiet --no-gc-warning 2>/dev/null || nix-store --realise "$drv")
        if [ $# -eq 0 ]; then
          digest=$(${berth}/bin/berth build "$spec" --quiet)
          echo "$image:$tag $digest"
          echo "built into berth's cache; nothing pushed. Push with: nix run .#${name} -- $image --push REGISTRY/$image:$tag" >&2
          exit 0
        fi
        exec ${berth}/bin/berth build "$spec" "$@"
      '';
    in
    if berth == null then
      throw "berth: mkBuildImageApp needs the berth package (import nix/lib { berth = …; })"
    else
      builtins.derivation {
        inherit name system script;
        builder = bb;
        args = [
          "sh"
          "-c"
          ''
            ${bb} mkdir -p "$out/bin"
            ${bb} cp "$scriptPath" "$out/bin/${name}"
            ${bb} chmod 555 "$out/bin/${name}"
          ''
        ];
        passAsFile = [ "script" ];
        preferLocalBuild = true;
        allowSubstitutes = false;
      };
in
{
  inherit
    buildImage
    pullImage
    mkBuildImageApp
    writeText
    goArch
    ;
  toTOML = import ./toml.nix;
}
