# Small, loosely typed stand-ins for the NixOS options and the packages nix/module.nix and
# nix/appliance.nix touch, so lib.evalModules can evaluate them without nixpkgs (which these
# machines do not have). Only lib comes from nixpkgs (RCSGATE_NIXPKGS_LIB).
{ lib }:

let
  inherit (lib) types mkOption;

  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
      meta = { };
    }
    // extra;

  jsonValue =
    let
      v =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf v)
            (types.listOf v)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    v;

  pkgs = {
    inherit lib;
    formats.yaml =
      { }:
      {
        type = jsonValue;
        # Real nixpkgs writes YAML; JSON is YAML and keeps the value for the checks.
        generate =
          name: value:
          fakeDrv name {
            inherit value;
            text = builtins.toJSON value;
          };
      };
    writeShellScript = name: text: fakeDrv name { inherit text; };
    writeShellScriptBin =
      name: text:
      fakeDrv name {
        inherit text;
        meta.mainProgram = name;
      };
    coreutils = fakeDrv "coreutils" { };
    envsubst = fakeDrv "envsubst" { };
    yq-go = fakeDrv "yq-go" { };
    writers.writePython3Bin = name: _: _: fakeDrv name { };
    python3Packages.matrix-nio = fakeDrv "matrix-nio" { };
    testers.runNixOSTest = test: fakeDrv "vm-test" { inherit test; };
    nixfmt = fakeDrv "nixfmt" { };
    callPackage = _: _: throw "stub pkgs: set services.rcsgate.package";
  };

  opt = type: default: mkOption { inherit type default; };
  anyAttrs = opt (types.attrsOf types.anything) { };
  strList = opt (types.listOf types.str) [ ];

  # A unit option's value: lists concatenate, everything else must agree.
  unitValue = types.either (types.listOf types.anything) (
    types.oneOf [
      types.bool
      types.int
      types.str
      types.path
    ]
  );

  serviceType = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      enable = opt types.bool true;
      description = opt types.str "";
      wantedBy = strList;
      requiredBy = strList;
      wants = strList;
      requires = strList;
      after = strList;
      before = strList;
      partOf = strList;
      restartTriggers = opt (types.listOf types.anything) [ ];
      stopIfChanged = opt types.bool true;
      environment = opt (types.attrsOf types.str) { };
      serviceConfig = opt (types.attrsOf unitValue) { };
    };
  };

  socketType = types.submodule {
    options = {
      enable = opt types.bool true;
      wantedBy = strList;
      listenStreams = strList;
      listenDatagrams = strList;
      socketConfig = opt (types.attrsOf unitValue) { };
    };
  };

  # The option declarations (NixOS's own are much richer; these take what is set).
  options = {
    options = {
      assertions = opt (types.listOf types.unspecified) [ ];
      warnings = opt (types.listOf types.str) [ ];
      meta = anyAttrs;

      systemd.package = opt types.package (fakeDrv "systemd" { });
      systemd.packages = opt (types.listOf types.package) [ ];
      systemd.services = opt (types.attrsOf serviceType) { };
      systemd.sockets = opt (types.attrsOf socketType) { };

      environment.systemPackages = opt (types.listOf types.package) [ ];

      networking.hostName = opt types.str "nixos";
      networking.firewall = {
        enable = opt types.bool true;
        allowedTCPPorts = opt (types.listOf types.port) [ ];
        allowedUDPPorts = opt (types.listOf types.port) [ ];
      };

      users = anyAttrs;

      services.matrix-tuwunel = {
        enable = opt types.bool false;
        package = opt types.package (fakeDrv "matrix-tuwunel-1.9.1" { version = "1.9.1"; });
        settings = opt (types.attrsOf jsonValue) { };
      };
      services.matrix-synapse = {
        enable = opt types.bool false;
        settings = opt (types.attrsOf types.anything) { };
        workers = opt (types.attrsOf types.anything) { };
        serviceUnit = opt types.str "matrix-synapse.service";
      };
      services.postgresql = {
        enable = opt types.bool false;
        initdbArgs = strList;
        ensureDatabases = strList;
        ensureUsers = opt (types.listOf types.anything) [ ];
      };

      # Only the appliance and its machine module set these.
      networking.useDHCP = opt types.bool true;
      boot = anyAttrs;
      fileSystems = anyAttrs;
      hardware = anyAttrs;
      image = anyAttrs;
      virtualisation = anyAttrs;
      services.getty = anyAttrs;
      services.openssh = anyAttrs;
      services.journald.extraConfig = opt types.lines "";
      system.autoUpgrade = anyAttrs;
      system.stateVersion = opt types.str "";
      nix = anyAttrs;
      time.timeZone = opt (types.nullOr types.str) null;
    };
  };
in
{
  inherit pkgs fakeDrv options;

  # A package that looks like the rcsgate build.
  rcsgate = fakeDrv "rcsgate-0.1.0" {
    pname = "rcsgate";
    version = "0.1.0";
    meta.mainProgram = "rcsgate";
  };
}
