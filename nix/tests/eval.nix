# Module evaluation test: nix/module.nix (and nix/appliance.nix) evaluated with
# lib.evalModules against nix/tests/stubs.nix, in several configurations. Returns a list of
# { name, ok, detail }; nix/nix_test.go runs it when RCSGATE_NIXPKGS_LIB names a nixpkgs
# lib directory:
#   nix-instantiate --store dummy:// --eval --strict --json nix/tests/eval.nix --argstr libDir /path/to/nixpkgs/lib
{ libDir }:

let
  lib = import (/. + libDir);
  stubs = import ./stubs.nix { inherit lib; };

  eval =
    extra:
    (lib.evalModules {
      specialArgs = {
        inherit (stubs) pkgs;
        modulesPath = "/nonexistent";
      };
      modules = [
        stubs.options
        ../module.nix
        { services.rcsgate.package = stubs.rcsgate; }
      ]
      ++ extra;
    }).config;

  base = {
    services.rcsgate = {
      enable = true;
      domain = "example.org";
    };
  };

  failedAssertions = cfg: map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  check = name: ok: detail: { inherit name ok detail; };
  show = v: builtins.toJSON v;

  hardeningKeys = [
    "DynamicUser"
    "User"
    "Group"
    "StateDirectory"
    "StateDirectoryMode"
    "UMask"
    "CapabilityBoundingSet"
    "AmbientCapabilities"
    "NoNewPrivileges"
    "ProtectSystem"
    "ProtectHome"
    "PrivateTmp"
    "PrivateDevices"
    "PrivateUsers"
    "RestrictAddressFamilies"
    "SystemCallFilter"
    "MemoryDenyWriteExecute"
  ];

  # --- 1. defaults: tuwunel on this machine, firewall closed -------------------------------
  c1 = eval [
    base
    {
      services.rcsgate.settings = {
        log_level = "debug";
        pair_ttl = "5m";
        channel.public_addrs = [ "phone.example.org:443" ];
        permissions."@you:example.org" = "admin";
        custom_key.nested = 42;
      };
    }
  ];
  s1 = c1.services.rcsgate.configFile.value;
  text1 = c1.services.rcsgate.configFile.text;
  setup1 = c1.systemd.services.rcsgate-setup;
  svc1 = c1.systemd.services.rcsgate;
  tuwunel1 = c1.systemd.services.tuwunel;

  # --- 2. open firewall, another channel port -----------------------------------------------
  c2 = eval [
    base
    {
      services.rcsgate.openFirewall = true;
      services.rcsgate.channelPort = 8443;
      services.rcsgate.acmeEmail = "admin@example.org";
    }
  ];

  # --- 3. external homeserver, no HTTPS front -----------------------------------------------
  c3 = eval [
    base
    {
      services.rcsgate = {
        homeserver = "external";
        homeserverUrl = "https://matrix.example.org";
        openFirewall = true;
      };
    }
  ];

  # --- 4. Synapse with PostgreSQL ------------------------------------------------------------
  c4 = eval [
    base
    { services.rcsgate.homeserver = "synapse"; }
  ];

  # --- 5. secrets in settings ---------------------------------------------------------------
  c5 = eval [
    base
    {
      services.rcsgate.settings = {
        appservice.as_token = "plaintext-token-in-the-store";
        id_key = "another-plaintext-secret";
      };
    }
  ];
  c6 = eval [
    base
    {
      services.rcsgate.environmentFile = "/run/secrets/rcsgate.env";
      services.rcsgate.settings.appservice.as_token = "$RCSGATE_AS_TOKEN";
    }
  ];

  # --- 7. a tuwunel without appservice_dir ----------------------------------------------------
  c7 = eval [
    base
    { services.matrix-tuwunel.package = stubs.fakeDrv "matrix-tuwunel-1.5.0" { version = "1.5.0"; }; }
  ];

  # --- 8. the appliance -----------------------------------------------------------------------
  c8 = eval [ ../appliance.nix ];

  # --- 9. the appliance as a machine (boot, disks, image variants, VM) ----------------------
  c9 = eval [
    ../appliance.nix
    ../appliance-machine.nix
  ];

  # --- 10. the flake's outputs, with a stand-in nixpkgs input ---------------------------------
  flake = import ../../flake.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  fakeNixpkgs = {
    lib = lib // {
      nixosSystem =
        { modules }:
        {
          inherit modules;
          config.system.build = {
            images = {
              qemu-efi = stubs.fakeDrv "qemu-efi-image" { };
              raw-efi = stubs.fakeDrv "raw-efi-image" { };
            };
            vm = stubs.fakeDrv "vm" { };
          };
        };
    };
    legacyPackages = lib.genAttrs systems (
      _:
      stubs.pkgs
      // {
        callPackage = _: _: {
          rcsgate = stubs.rcsgate;
          rcsgate-agent = stubs.fakeDrv "rcsgate-agent" { };
          rcsgate-agent-android-arm64 = stubs.fakeDrv "rcsgate-agent-android-arm64" { };
        };
      }
    );
  };
  outputs = lib.fix (self: flake.outputs {
    inherit self;
    nixpkgs = fakeNixpkgs;
  });
  vmTest = outputs.checks.x86_64-linux.vm-test.test { inherit lib; pkgs = stubs.pkgs; };
  vmScript = vmTest.testScript {
    nodes.server.services.rcsgate.configFile = "/nix/store/00000000000000000000000000000000-rcsgate-settings.yaml";
  };

  hasAll = needles: list: lib.all (n: lib.elem n list) needles;
in
[
  (check "defaults evaluate without failed assertions" (failedAssertions c1 == [ ]) (
    show (failedAssertions c1)
  ))
  (check "rendered config: homeserver, appservice, channel, defaults" (
    s1.state_dir == "/var/lib/rcsgate"
    && s1.homeserver.url == "http://127.0.0.1:6167"
    && s1.homeserver.domain == "example.org"
    && s1.appservice.listen == "127.0.0.1:29340"
    && s1.appservice.id == "rcsgate"
    && s1.appservice.bot == "rcsbot"
    && s1.appservice.user_prefix == "rcs_"
    && s1.channel.listen == "0.0.0.0:443"
  ) (show s1))
  (check "rendered config: the settings given" (
    s1.log_level == "debug"
    && s1.pair_ttl == "5m"
    && s1.channel.public_addrs == [ "phone.example.org:443" ]
    && s1.permissions == {
      "example.org" = "user";
      "@you:example.org" = "admin";
    }
    && s1.custom_key.nested == 42
  ) (show s1))
  (check "rendered config: TLS front, self-signed without acmeEmail" (
    s1.tls == {
      mode = "selfsigned";
      domain = "example.org";
    }
  ) (show (s1.tls or null)))
  (check "rendered config: no secret in the store" (
    !(s1.appservice ? as_token)
    && !(s1.appservice ? hs_token)
    && !(s1 ? id_key)
    && !(lib.hasInfix "as_token" text1)
    && !(lib.hasInfix "hs_token" text1)
    && !(lib.hasInfix "id_key" text1)
  ) text1)
  (check "setup unit: oneshot, same dynamic user and state directory as rcsgate.service" (
    setup1.serviceConfig.Type == "oneshot"
    && setup1.serviceConfig.RemainAfterExit
    && setup1.serviceConfig.DynamicUser
    && setup1.serviceConfig.User == "rcsgate"
    && setup1.serviceConfig.StateDirectory == "rcsgate"
    && setup1.serviceConfig.StateDirectoryMode == "0700"
    && setup1.serviceConfig.UMask == "0077"
    && lib.elem "multi-user.target" setup1.wantedBy
  ) (show setup1.serviceConfig))
  (check "setup unit: hardened" (
    let
      sc = setup1.serviceConfig;
    in
    sc.ProtectSystem == "strict"
    && sc.ProtectHome
    && sc.PrivateNetwork
    && sc.PrivateTmp
    && sc.PrivateDevices
    && sc.NoNewPrivileges
    && sc.MemoryDenyWriteExecute
    && sc.CapabilityBoundingSet == [ "" ]
    && sc.RestrictAddressFamilies == [ "AF_UNIX" ]
    && lib.elem "@system-service" sc.SystemCallFilter
    && !(sc ? EnvironmentFile)
  ) (show setup1.serviceConfig))
  (check "setup script: secrets once, envsubst, merge, registration" (
    let
      t = setup1.serviceConfig.ExecStart.text;
    in
    lib.hasInfix "secrets.yaml" t
    && lib.hasInfix "rcsgate init --state" t
    && lib.hasInfix "envsubst -no-unset -i ${c1.services.rcsgate.configFile}" t
    && lib.hasInfix "ireduce" t
    && lib.hasInfix "rcsgate registration --config" t
    && lib.hasInfix "umask 0077" t
  ) setup1.serviceConfig.ExecStart.text)
  (check "rcsgate.service: the shipped unit, drop-ins only (no hardening key overridden)" (
    lib.elem stubs.rcsgate c1.systemd.packages
    && lib.elem "multi-user.target" svc1.wantedBy
    && lib.elem "rcsgate-setup.service" svc1.requires
    && hasAll [ "rcsgate-setup.service" "tuwunel.service" ] svc1.after
    && !svc1.stopIfChanged
    && lib.intersectLists hardeningKeys (lib.attrNames svc1.serviceConfig) == [ ]
  ) (show svc1))
  (check "sockets: all four wanted, shipped addresses kept" (
    lib.all (n: lib.elem "sockets.target" c1.systemd.sockets.${n}.wantedBy) [
      "rcsgate-appservice"
      "rcsgate-https"
      "rcsgate-http"
      "rcsgate-quic"
    ]
    && c1.systemd.sockets.rcsgate-appservice.listenStreams == [ ]
    && c1.systemd.sockets.rcsgate-quic.listenDatagrams == [ ]
  ) (show c1.systemd.sockets))
  (check "tuwunel: enabled, registration by LoadCredential + appservice_dir" (
    c1.services.matrix-tuwunel.enable
    && c1.services.matrix-tuwunel.settings.global.server_name == "example.org"
    && c1.services.matrix-tuwunel.settings.global.appservice_dir == "/run/credentials/tuwunel.service"
    && tuwunel1.serviceConfig.LoadCredential == [
      "rcsgate-registration.yaml:/var/lib/rcsgate/registration.yaml"
    ]
    && lib.elem "rcsgate-setup.service" tuwunel1.requires
    && lib.elem "rcsgate-setup.service" tuwunel1.after
  ) (show tuwunel1))
  (check "firewall closed without openFirewall" (
    c1.networking.firewall.allowedTCPPorts == [ ] && c1.networking.firewall.allowedUDPPorts == [ ]
  ) (show c1.networking.firewall))
  (check "admin command runs as the service's dynamic user" (
    let
      admin = lib.findFirst (p: p.name == "rcsgate") null c1.environment.systemPackages;
    in
    admin != null
    && lib.hasInfix "DynamicUser=yes" admin.text
    && lib.hasInfix "StateDirectory=rcsgate" admin.text
    && lib.hasInfix "RCSGATE_CONFIG=/var/lib/rcsgate/config.yaml" admin.text
  ) "")
  (check "openFirewall: 80/tcp, 443/tcp and the channel port; acmeEmail selects ACME" (
    c2.networking.firewall.allowedTCPPorts == [
      80
      443
    ]
    && c2.networking.firewall.allowedUDPPorts == [ 8443 ]
    && c2.systemd.sockets.rcsgate-quic.listenDatagrams == [
      ""
      "8443"
    ]
    && c2.services.rcsgate.configFile.value.channel.public_addrs == [ "example.org:8443" ]
    && c2.services.rcsgate.configFile.value.tls == {
      mode = "acme";
      domain = "example.org";
      email = "admin@example.org";
    }
    && failedAssertions c2 == [ ]
  ) (show c2.networking.firewall))
  (check "external homeserver: no homeserver, no HTTPS front, only the channel port opened" (
    !c3.services.matrix-tuwunel.enable
    && !c3.services.matrix-synapse.enable
    && c3.services.rcsgate.configFile.value.homeserver.url == "https://matrix.example.org"
    && !(c3.services.rcsgate.configFile.value ? tls)
    && !(c3.systemd.sockets ? rcsgate-https)
    && !(c3.systemd.sockets ? rcsgate-http)
    && c3.networking.firewall.allowedTCPPorts == [ ]
    && c3.networking.firewall.allowedUDPPorts == [ 443 ]
    && failedAssertions c3 == [ ]
  ) (show c3.networking.firewall))
  (check "synapse: PostgreSQL, app_service_config_files, a copy readable by its group" (
    let
      s = c4.services.matrix-synapse.settings;
    in
    c4.services.matrix-synapse.enable
    && c4.services.postgresql.enable
    && lib.elem "matrix-synapse" c4.services.postgresql.ensureDatabases
    && s.database.name == "psycopg2"
    && s.server_name == "example.org"
    && s.app_service_config_files == [ "/run/rcsgate-registration/registration.yaml" ]
    && lib.length c4.systemd.services.rcsgate-setup.serviceConfig.ExecStartPost == 1
    && lib.hasPrefix "+" (lib.head c4.systemd.services.rcsgate-setup.serviceConfig.ExecStartPost)
    && lib.elem "rcsgate-setup.service" c4.systemd.services.matrix-synapse.requires
    && lib.elem "matrix-synapse.service" c4.systemd.services.rcsgate.after
    && c4.services.rcsgate.configFile.value.homeserver.url == "http://127.0.0.1:8008"
    && !c4.services.matrix-tuwunel.enable
    && failedAssertions c4 == [ ]
  ) (show c4.services.matrix-synapse.settings))
  (check "a literal secret in settings fails evaluation" (
    let
      msgs = lib.concatStrings (failedAssertions c5);
    in
    lib.hasInfix "appservice.as_token" msgs && lib.hasInfix "id_key" msgs
  ) (show (failedAssertions c5)))
  (check "a $NAME secret with environmentFile is accepted and the file is read by the setup unit" (
    failedAssertions c6 == [ ]
    && c6.systemd.services.rcsgate-setup.serviceConfig.EnvironmentFile == "/run/secrets/rcsgate.env"
    && c6.services.rcsgate.configFile.value.appservice.as_token == "$RCSGATE_AS_TOKEN"
  ) (show (failedAssertions c6)))
  (check "tuwunel older than 1.6.0 is refused" (
    lib.any (lib.hasInfix "1.6.0") (failedAssertions c7)
  ) (show (failedAssertions c7)))
  (check "appliance: tuwunel + rcsgate, firewall open for it, journald bounded, upgrades off" (
    c8.services.rcsgate.enable
    && c8.services.rcsgate.homeserver == "tuwunel"
    && c8.services.matrix-tuwunel.enable
    && c8.services.matrix-tuwunel.settings.global.address == [
      "127.0.0.1"
      "::1"
    ]
    && c8.networking.firewall.enable
    && hasAll [ 80 443 ] c8.networking.firewall.allowedTCPPorts
    && c8.networking.firewall.allowedUDPPorts == [ 443 ]
    && lib.hasInfix "SystemMaxUse=" c8.services.journald.extraConfig
    && lib.hasInfix "MaxRetentionSec=" c8.services.journald.extraConfig
    && !c8.system.autoUpgrade.enable
    && c8.services.rcsgate.configFile.value.tls.mode == "selfsigned"
    && failedAssertions c8 == [ ]
  ) (show c8.networking.firewall))
  (check "machine: EFI boot, root by label, image variants, VM forwards HTTPS and QUIC" (
    c9.boot.loader.systemd-boot.enable
    && c9.fileSystems."/".device == "/dev/disk/by-label/nixos"
    && c9.fileSystems."/boot".device == "/dev/disk/by-label/ESP"
    && hasAll [ "qemu-efi" "raw-efi" ] (lib.attrNames c9.image.modules)
    && c9.system.stateVersion == "26.05"
    && lib.length c9.virtualisation.vmVariant.virtualisation.forwardPorts == 3
    && failedAssertions c9 == [ ]
  ) (show c9.image.modules))
  (check "flake: packages, modules, appliance, image, vm app, vm-test check" (
    flake.inputs.nixpkgs.url == "github:NixOS/nixpkgs/nixos-26.05"
    && lib.all (
      system:
      lib.attrNames outputs.packages.${system} == [
        "default"
        "image"
        "image-qemu-efi"
        "image-raw-efi"
        "rcsgate"
        "rcsgate-agent"
        "rcsgate-agent-android-arm64"
      ]
      && outputs.packages.${system}.image.name == "qemu-efi-image"
      && outputs.packages.${system}.image-raw-efi.name == "raw-efi-image"
      && outputs.apps.${system}.vm.program == "${stubs.fakeDrv "vm" { }}/bin/run-rcsgate-vm"
      && outputs.checks.${system} ? vm-test
    ) systems
    && lib.attrNames outputs.nixosModules == [
      "appliance"
      "default"
      "machine"
    ]
    && outputs.nixosConfigurations ? appliance
  ) (show (lib.attrNames outputs.packages.x86_64-linux)))
  (check "vm-test: appliance node and phone node, pairing and message exchange in the script" (
    vmTest.name == "rcsgate-appliance"
    && lib.attrNames vmTest.nodes == [
      "phone"
      "server"
    ]
    && lib.all (s: lib.hasInfix s vmScript) [
      "rcsgate pair --user @alice:server"
      "rcsgate-agent pair --state"
      "rcsgate-agent run --state /var/lib/agent --backend sim"
      "exchange-message"
      "-rcsgate-settings.yaml"
    ]
  ) vmScript)
]
