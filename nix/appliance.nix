# The appliance: tuwunel + rcsgate (with its HTTPS front) on one machine, firewalled, with
# bounded journald and automatic upgrades available but off. The machine itself (boot,
# disks, images, the QEMU VM) is in appliance-machine.nix; the VM test uses this file alone.
#
# Your own flake sets at least:
#   services.rcsgate.domain = "example.org";         # the Matrix server name, for good
#   services.rcsgate.acmeEmail = "you@example.org";  # ACME certificates (else self-signed)
#   users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 ..." ];
{ lib, ... }:

{
  imports = [ ./module.nix ];

  services.rcsgate = {
    enable = true;
    homeserver = "tuwunel";
    domain = lib.mkDefault "rcsgate.local";
    openFirewall = true;
  };

  services.matrix-tuwunel.settings.global = {
    # Reached through rcsgate's HTTPS front only.
    address = lib.mkDefault [
      "127.0.0.1"
      "::1"
    ];
    allow_registration = lib.mkDefault false;
  };

  networking.firewall.enable = true;

  # Administration over SSH with keys only; the firewall opens 22/tcp for it.
  services.openssh = {
    enable = lib.mkDefault true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = lib.mkDefault "prohibit-password";
    };
  };

  # Logs: `journalctl -u rcsgate -o json`; keep a month, at most 500 MB.
  services.journald.extraConfig = ''
    SystemMaxUse=500M
    MaxRetentionSec=1month
  '';

  # Upgrades are yours to start (nixos-rebuild switch --flake ...); set enable = true to
  # follow the flake nightly. No reboot without you.
  system.autoUpgrade = {
    enable = lib.mkDefault false;
    flake = lib.mkDefault "github:rcsgate/rcsgate#appliance";
    dates = lib.mkDefault "04:40";
    randomizedDelaySec = lib.mkDefault "45min";
    allowReboot = lib.mkDefault false;
  };

  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 30d";
  };
}
