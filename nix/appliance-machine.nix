# The appliance as a machine: how it boots, where its root is, the disk images nixpkgs'
# own machinery builds from it (nixos/modules/image/images.nix), and the QEMU VM.
#
#   nix build .#image                    # qcow2, EFI: VPS upload   (system.build.images.qemu-efi)
#   nix build .#image-raw-efi            # raw, EFI: dd to a mini PC (system.build.images.raw-efi)
#   nixos-rebuild build-image --flake .#appliance --image-variant qemu-efi
#   nix run .#vm                         # this configuration in QEMU (system.build.vm)
{ lib, modulesPath, ... }:

{
  networking.hostName = lib.mkDefault "rcsgate";
  time.timeZone = lib.mkDefault "UTC";
  system.stateVersion = "26.05";

  # The layout disk-image.nix writes: root labelled "nixos" (grown to the disk at first
  # boot), ESP labelled "ESP". The image variants set the same with higher priority; these
  # keep `nixos-rebuild switch --flake .#appliance` on the installed machine bootable.
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = false; # images move between machines
  boot.growPartition = true;
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = true;
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/ESP";
    fsType = "vfat";
    options = [ "umask=0077" ];
  };

  # Disks and USB on common mini PCs and VPS hosts.
  boot.initrd.availableKernelModules = [
    "ahci"
    "nvme"
    "sd_mod"
    "usb_storage"
    "xhci_pci"
    "virtio_pci"
    "virtio_blk"
    "virtio_scsi"
  ];
  hardware.enableRedistributableFirmware = lib.mkDefault true;
  networking.useDHCP = lib.mkDefault true;

  image.modules = {
    qemu-efi = {
      imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];
      image.baseName = "rcsgate-appliance-vps";
    };
    raw-efi = {
      image.baseName = "rcsgate-appliance-minipc";
    };
  };

  # `nix run .#vm`: HTTPS and the device channel on localhost:8443 (TCP and UDP), SSH on 2222,
  # a root console without password (the VM only).
  virtualisation.vmVariant = {
    virtualisation.memorySize = 2048;
    virtualisation.forwardPorts = [
      {
        from = "host";
        proto = "tcp";
        host.port = 8443;
        guest.port = 443;
      }
      {
        from = "host";
        proto = "udp";
        host.port = 8443;
        guest.port = 443;
      }
      {
        from = "host";
        proto = "tcp";
        host.port = 2222;
        guest.port = 22;
      }
    ];
    services.getty.autologinUser = "root";
    services.rcsgate.settings.channel.public_addrs = [ "127.0.0.1:8443" ];
  };
}
