{
  description = "rcsgate: a self-hosted Matrix gateway to RCS and SMS through your own phone";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # The appliance for one platform: services (nix/appliance.nix) + machine (boot, disks,
      # image variants, VM).
      applianceFor =
        system:
        lib.nixosSystem {
          modules = [
            self.nixosModules.appliance
            self.nixosModules.machine
            { nixpkgs.hostPlatform = system; }
          ];
        };
      appliances = lib.genAttrs systems applianceFor;
    in
    {
      packages = forAllSystems (
        system: pkgs:
        let
          built = pkgs.callPackage ./nix/package.nix { };
          images = appliances.${system}.config.system.build.images;
        in
        {
          inherit (built) rcsgate rcsgate-agent rcsgate-agent-android-arm64;
          default = built.rcsgate;
          # nixpkgs' own image machinery (nixos/modules/image/images.nix).
          image = images.qemu-efi; # qcow2, EFI: upload to a VPS
          image-qemu-efi = images.qemu-efi;
          image-raw-efi = images.raw-efi; # raw, EFI: dd onto a mini PC's disk
        }
      );

      nixosModules = {
        # services.rcsgate; the package defaults to this flake's build.
        default =
          { lib, pkgs, ... }:
          {
            imports = [ ./nix/module.nix ];
            services.rcsgate.package = lib.mkDefault (
              self.packages.${pkgs.stdenv.hostPlatform.system}.rcsgate
                or (pkgs.callPackage ./nix/package.nix { }).rcsgate
            );
          };
        # The appliance's services, to import into your own nixosSystem.
        appliance = {
          imports = [
            self.nixosModules.default
            ./nix/appliance.nix
          ];
        };
        # The appliance's machine: EFI boot, root by label, image variants, QEMU VM.
        machine = ./nix/appliance-machine.nix;
      };

      nixosConfigurations.appliance = appliances.x86_64-linux;

      apps = forAllSystems (
        system: _: {
          vm = {
            type = "app";
            program = "${appliances.${system}.config.system.build.vm}/bin/run-rcsgate-vm";
            meta.description = "Boot the appliance in QEMU (HTTPS and QUIC on localhost:8443, SSH on 2222)";
          };
        }
      );

      checks = forAllSystems (
        system: pkgs: {
          inherit (self.packages.${system}) rcsgate rcsgate-agent rcsgate-agent-android-arm64;
          vm-test = pkgs.testers.runNixOSTest (import ./nix/tests/vm-test.nix { inherit self; });
        }
      );

      formatter = forAllSystems (_: pkgs: pkgs.nixfmt);
    };
}
