{
  description = "berth: Nix closures to reproducible OCI images, an OCI registry, a P2P node mirror and a GitOps digest bot";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );
      pkgsFor = system: nixpkgs.legacyPackages.${system};
      # berth's Nix library for one system (nix/lib).
      libFor =
        system:
        import ./nix/lib {
          inherit system;
          busybox = (pkgsFor system).busybox;
          berth = self.packages.${system}.berth;
        };
      imagesFor =
        system:
        import ./images {
          pkgs = pkgsFor system;
          berthLib = libFor system;
          berth = self.packages.${system}.berth;
        };
    in
    {
      # berth.lib.${system}.buildImage { name; contents; config; … } and
      # mkBuildImageApp { images; } (docs/nix.md).
      lib = forAllSystems libFor;

      packages = forAllSystems (
        system:
        let
          berth = (pkgsFor system).callPackage ./nix/package.nix { };
        in
        {
          inherit berth;
          default = berth;
        }
        # Each image's spec as a package: image-ollama, image-forgejo, …
        // builtins.listToAttrs (
          map (name: {
            name = "image-${name}";
            value = (imagesFor system).${name};
          }) (builtins.attrNames (imagesFor system))
        )
      );

      # The same specs as an attribute set: legacyPackages.${system}.images.ollama.
      legacyPackages = forAllSystems (system: {
        images = imagesFor system;
      });

      apps = forAllSystems (
        system:
        let
          buildImage = {
            type = "app";
            program = "${
              (libFor system).mkBuildImageApp { images = imagesFor system; }
            }/bin/build-image";
          };
        in
        {
          build-image = buildImage;
          default = buildImage;
        }
      );

      nixosModules = {
        registry = import ./nix/modules/registry.nix self;
        mirror = import ./nix/modules/mirror.nix self;
        bot = import ./nix/modules/bot.nix self;
      };

      checks = forAllSystems (
        system:
        {
          berth = self.packages.${system}.berth;
        }
        # Every image's spec builds (its closure is realised, no layers).
        // builtins.listToAttrs (
          map (name: {
            name = "image-${name}";
            value = (imagesFor system).${name};
          }) (builtins.attrNames (imagesFor system))
        )
      );
    };
}
