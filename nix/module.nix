# services.rcsgate: the bridge, its socket units, and the homeserver it registers with.
#
# The unit files are the ones in dist/systemd, shipped in the package (systemd.packages);
# this module only adds drop-ins (wantedBy, ordering, addresses) so what CI checks with
# systemd-analyze is what runs.
#
# Secrets (as_token, hs_token, id_key) never enter the Nix store: rcsgate-setup.service
# generates them at first boot into the state directory (as nixpkgs' mautrix-meta module
# does), merges them with the settings rendered here, substitutes $VARS from
# environmentFile, and writes the appservice registration, which tuwunel gets through
# LoadCredential (+ appservice_dir) and Synapse as a copy its group may read.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) types mkOption;

  cfg = config.services.rcsgate;
  format = pkgs.formats.yaml { };

  stateDir = "/var/lib/rcsgate"; # StateDirectory=rcsgate (DynamicUser: a link into /var/lib/private)
  registrationCredential = "rcsgate-registration.yaml";
  registrationFile = "${stateDir}/registration.yaml";

  localHomeserver = cfg.homeserver != "external";
  homeserverUnit =
    {
      tuwunel = [ "tuwunel.service" ];
      synapse = [ config.services.matrix-synapse.serviceUnit or "matrix-synapse.service" ];
      external = [ ];
    }
    .${cfg.homeserver};

  # The settings without secrets, as they land in the store.
  settingsFile = format.generate "rcsgate-settings.yaml" cfg.settings;

  secretKeys = [
    [ "appservice" "as_token" ]
    [ "appservice" "hs_token" ]
    [ "id_key" ]
  ];
  # A secret may appear in settings only as a reference to environmentFile ("$NAME").
  literalSecrets = lib.filter (
    p:
    let
      v = lib.attrByPath p null cfg.settings;
    in
    v != null && !(lib.isString v && lib.hasPrefix "$" v)
  ) secretKeys;

  setupScript = pkgs.writeShellScript "rcsgate-setup" ''
    set -euo pipefail
    umask 0077
    dir="$STATE_DIRECTORY"
    PATH=${
      lib.makeBinPath [
        cfg.package
        pkgs.coreutils
        pkgs.envsubst
        pkgs.yq-go
      ]
    }

    # 1. Secrets, once: taken over from a config written by `rcsgate init`, else fresh ones
    #    from `rcsgate init` itself (the same generator the CLI uses).
    if [ ! -s "$dir/secrets.yaml" ]; then
      src="$dir/config.yaml"
      origin="the existing $src"
      if [ ! -s "$src" ]; then
        origin="a fresh rcsgate init"
        tmp=$(mktemp -d)
        rcsgate init --state "$tmp" \
          --homeserver ${lib.escapeShellArg cfg.settings.homeserver.url} \
          --domain ${lib.escapeShellArg cfg.settings.homeserver.domain} >/dev/null
        src="$tmp/config.yaml"
      fi
      yq -P '{"appservice": {"as_token": .appservice.as_token, "hs_token": .appservice.hs_token}, "id_key": .id_key}' \
        "$src" > "$dir/secrets.yaml.new"
      mv "$dir/secrets.yaml.new" "$dir/secrets.yaml"
      rm -rf "''${tmp:-/nonexistent}"
      echo "rcsgate-setup: bridge secrets kept in $dir/secrets.yaml (from $origin)"
    fi

    # 2. The settings from the store, with $VARS from environmentFile substituted
    #    (a $NAME that is not set is an error, not an empty secret).
    envsubst -no-unset -i ${settingsFile} -o "$dir/settings.yaml.new"

    # 3. config.yaml = secrets, overlaid with the settings (a secret given in environmentFile wins).
    yq eval-all -P '. as $f ireduce ({}; . * $f)' "$dir/secrets.yaml" "$dir/settings.yaml.new" > "$dir/config.yaml.new"
    rm "$dir/settings.yaml.new"
    mv "$dir/config.yaml.new" "$dir/config.yaml"

    # 4. The registration the homeserver loads (validates the whole config on the way).
    rcsgate registration --config "$dir/config.yaml" > "$dir/registration.yaml.new"
    mv "$dir/registration.yaml.new" "$dir/registration.yaml"
  '';

  # `rcsgate pair`, `rcsgate status`, ... as the service's dynamic user, so files the CLI
  # creates in the state directory stay the service's.
  adminCommand = pkgs.writeShellScriptBin "rcsgate" ''
    if [ "$(id -u)" != 0 ]; then
      echo "rcsgate: run as root (it runs the command as the rcsgate service user)" >&2
      exit 1
    fi
    exec ${config.systemd.package}/bin/systemd-run --quiet --pipe --wait --collect \
      --service-type=exec \
      -p DynamicUser=yes -p User=rcsgate -p Group=rcsgate \
      -p StateDirectory=rcsgate -p UMask=0077 \
      --setenv=RCSGATE_CONFIG=${stateDir}/config.yaml \
      ${lib.getExe cfg.package} "$@"
  '';

  # The socket units ship in the package with these addresses; the module overrides an
  # address only when the settings move it. The HTTPS and HTTP sockets name rcsgate.service
  # in Service=, so enabling them is enough for the daemon to receive them.
  shipped = {
    appservice = "127.0.0.1:29340";
    quic = "443";
  };
  appserviceAddr = cfg.settings.appservice.listen;
  quicAddr = toString cfg.channelPort;
  sockets =
    {
      rcsgate-appservice = lib.optionalAttrs (appserviceAddr != shipped.appservice) {
        # "" first: replace the shipped address instead of adding a second one.
        listenStreams = [
          ""
          appserviceAddr
        ];
      };
      rcsgate-quic = lib.optionalAttrs (quicAddr != shipped.quic) {
        listenDatagrams = [
          ""
          quicAddr
        ];
      };
    }
    // lib.optionalAttrs cfg.https.enable {
      rcsgate-https = { };
      rcsgate-http = { };
    };

  # Synapse (main process and workers) reads the registration from a root-owned copy its
  # group may read; the state directory itself is private to the dynamic user.
  synapseRegistration = "/run/rcsgate-registration/registration.yaml";
  copyForSynapse = pkgs.writeShellScript "rcsgate-registration-for-synapse" ''
    set -eu
    ${pkgs.coreutils}/bin/install -d -m 0755 ${dirOf synapseRegistration}
    ${pkgs.coreutils}/bin/install -m 0640 -o root -g matrix-synapse ${registrationFile} ${synapseRegistration}
  '';
in
{
  options.services.rcsgate = {
    enable = lib.mkEnableOption "rcsgate, a Matrix bridge to RCS and SMS through your own phone";

    package = mkOption {
      type = types.package;
      default = (pkgs.callPackage ./package.nix { }).rcsgate;
      defaultText = lib.literalExpression "rcsgate.packages.\${system}.rcsgate";
      description = "The rcsgate package; its lib/systemd/system holds the unit files that run.";
    };

    domain = mkOption {
      type = types.strMatching "[a-z0-9]([a-z0-9.-]*[a-z0-9])?";
      example = "example.org";
      description = ''
        The Matrix server name (the part after `:` in user ids), and the host name the HTTPS
        front serves and devices reach. It cannot change once users exist.
      '';
    };

    acmeEmail = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "admin@example.org";
      description = ''
        Contact address for the ACME account. Setting it selects `tls.mode = "acme"` by
        default (Let's Encrypt, HTTP-01 on port 80 and TLS-ALPN-01 on 443), which means
        agreeing to the CA's subscriber agreement.
      '';
    };

    homeserver = mkOption {
      type = types.enum [
        "tuwunel"
        "synapse"
        "external"
      ];
      default = "tuwunel";
      description = ''
        The homeserver the bridge registers with.
        `tuwunel`: run services.matrix-tuwunel here; the registration is loaded from
        `appservice_dir` through LoadCredential (tuwunel ≥ 1.6.0).
        `synapse`: run services.matrix-synapse with a local PostgreSQL; the registration goes
        into `app_service_config_files` as a copy readable by the matrix-synapse group (the
        main process and every worker read the same path).
        `external`: a homeserver elsewhere; set {option}`services.rcsgate.homeserverUrl` and add
        the registration (`rcsgate registration`) to that homeserver yourself.
      '';
    };

    homeserverUrl = mkOption {
      type = types.str;
      default =
        {
          tuwunel = "http://127.0.0.1:${toString (lib.head (config.services.matrix-tuwunel.settings.global.port or [ 6167 ]))}";
          synapse = "http://127.0.0.1:8008";
          external = throw "services.rcsgate.homeserverUrl must be set when services.rcsgate.homeserver = \"external\"";
        }
        .${cfg.homeserver};
      defaultText = lib.literalMD "the local tuwunel or Synapse client listener";
      example = "https://matrix.example.org";
      description = "Client-server API URL of the homeserver, as the bridge (and the HTTPS front) reach it.";
    };

    https.enable = mkOption {
      type = types.bool;
      default = localHomeserver;
      defaultText = lib.literalExpression ''services.rcsgate.homeserver != "external"'';
      description = ''
        Serve HTTPS for {option}`services.rcsgate.domain` from rcsgate (certmagic) on 443/tcp, with
        ACME answers and a redirect on 80/tcp: a reverse proxy of the Matrix client and
        federation APIs to the homeserver and `/.well-known/matrix/*`. Turn it off when another
        web server already owns ports 80 and 443.
      '';
    };

    tls.mode = mkOption {
      type = types.enum [
        "acme"
        "provided"
        "selfsigned"
      ];
      default = if cfg.acmeEmail != null then "acme" else "selfsigned";
      defaultText = lib.literalExpression ''if acmeEmail != null then "acme" else "selfsigned"'';
      description = ''
        Where the HTTPS certificate comes from: an ACME CA, files you provide
        (`settings.tls.cert_file`, `settings.tls.key_file`), or a self-signed certificate
        generated once (LAN appliances).
      '';
    };

    channelPort = mkOption {
      type = types.port;
      default = 443;
      description = "UDP port of the QUIC device channel (443/udp by default: one port for HTTPS and devices).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the device channel's UDP port, and 80/tcp and 443/tcp when the HTTPS front runs.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/rcsgate.env";
      description = ''
        A file of `NAME=value` lines, read at service start and substituted for `$NAME` in the
        settings, so secrets stay out of the Nix store. Example: set
        `settings.appservice.as_token = "$RCSGATE_AS_TOKEN"` and put `RCSGATE_AS_TOKEN=...`
        here. Without it the secrets are generated at first boot and kept in
        `/var/lib/rcsgate/secrets.yaml`.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        rcsgate's config file (YAML), less its secrets; see `internal/gateway/config.go`.
        Unknown keys are refused by rcsgate. Secrets (`appservice.as_token`,
        `appservice.hs_token`, `id_key`) may only appear as `$NAME` references to
        {option}`services.rcsgate.environmentFile`.
      '';
      type = types.submodule {
        freeformType = format.type;
        options = {
          state_dir = mkOption {
            type = types.str;
            default = stateDir;
            readOnly = true;
            description = "Where rcsgate keeps its databases and keys (the unit's StateDirectory).";
          };
          homeserver.url = mkOption {
            type = types.str;
            default = cfg.homeserverUrl;
            defaultText = lib.literalExpression "services.rcsgate.homeserverUrl";
            description = "Homeserver client-server URL.";
          };
          homeserver.domain = mkOption {
            type = types.str;
            default = cfg.domain;
            defaultText = lib.literalExpression "services.rcsgate.domain";
            description = "Homeserver server name.";
          };
          appservice.listen = mkOption {
            type = types.str;
            default = "127.0.0.1:29340";
            description = "Where the homeserver reaches the bridge (TCP); the rcsgate-appservice socket listens here.";
          };
          appservice.id = mkOption {
            type = types.str;
            default = "rcsgate";
            description = "Appservice id in the registration.";
          };
          appservice.bot = mkOption {
            type = types.str;
            default = "rcsbot";
            description = "Localpart of the bridge bot.";
          };
          appservice.user_prefix = mkOption {
            type = types.str;
            default = "rcs_";
            description = "Localpart prefix of the ghost users.";
          };
          channel.listen = mkOption {
            type = types.str;
            default = "0.0.0.0:${toString cfg.channelPort}";
            defaultText = lib.literalExpression ''"0.0.0.0:''${toString channelPort}"'';
            description = "UDP address of the device channel when not socket-activated.";
          };
          channel.public_addrs = mkOption {
            type = types.listOf types.str;
            default = [ "${cfg.domain}:${toString cfg.channelPort}" ];
            defaultText = lib.literalExpression ''[ "''${domain}:''${toString channelPort}" ]'';
            description = "host:port that pairing links tell devices to reach (UDP).";
          };
          permissions = mkOption {
            type = types.attrsOf (
              types.enum [
                "relay"
                "commands"
                "user"
                "admin"
              ]
            );
            default = { };
            # The module adds { ''${domain} = "user"; } with mkDefault, so entries given here add to it.
            example = {
              "example.org" = "user";
              "@you:example.org" = "admin";
            };
            description = "`*`, a server name or a user id, mapped to relay, commands, user or admin.";
          };
          pair_ttl = mkOption {
            type = types.str;
            default = "10m";
            description = "How long a pairing link works (Go duration).";
          };
          log_level = mkOption {
            type = types.enum [
              "debug"
              "info"
              "warn"
              "error"
            ];
            default = "info";
            description = "Log level; at info and above logs carry no message body and no full number.";
          };
        };
      };
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = settingsFile;
      defaultText = lib.literalMD "the rendered settings";
      description = "The settings as rendered into the store (no secrets); rcsgate-setup merges the secrets in.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = literalSecrets == [ ];
            message = ''
              services.rcsgate.settings: ${
                lib.concatMapStringsSep ", " (lib.concatStringsSep ".") literalSecrets
              } would be written to the world-readable Nix store. Leave them out (they are generated
              at first boot) or write "$NAME" and put NAME=... in services.rcsgate.environmentFile.
            '';
          }
          {
            assertion =
              cfg.homeserver != "tuwunel"
              || lib.versionAtLeast (config.services.matrix-tuwunel.package.version or "0") "1.6.0";
            message = "services.rcsgate.homeserver = \"tuwunel\" needs tuwunel >= 1.6.0 (global.appservice_dir).";
          }
        ];

        # Everyone on the homeserver may use the bridge unless settings.permissions says otherwise.
        services.rcsgate.settings.permissions.${cfg.domain} = lib.mkDefault "user";

        services.rcsgate.settings.tls = lib.mkIf cfg.https.enable (
          {
            mode = lib.mkDefault cfg.tls.mode;
            domain = lib.mkDefault cfg.domain;
          }
          // lib.optionalAttrs (cfg.acmeEmail != null) { email = lib.mkDefault cfg.acmeEmail; }
        );

        systemd.packages = [ cfg.package ];
        environment.systemPackages = [ adminCommand ];

        systemd.services.rcsgate-setup = {
          description = "rcsgate: secrets (first boot), config and appservice registration";
          wantedBy = [ "multi-user.target" ];
          restartTriggers = [ settingsFile ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = setupScript;
            # The same dynamic user and state directory as rcsgate.service.
            DynamicUser = true;
            User = "rcsgate";
            Group = "rcsgate";
            StateDirectory = "rcsgate";
            StateDirectoryMode = "0700";
            UMask = "0077";
            EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
            ExecStartPost = lib.mkIf (cfg.homeserver == "synapse") [ "+${copyForSynapse}" ];
            PrivateTmp = true;
            PrivateNetwork = true;
            PrivateDevices = true;
            PrivateUsers = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectKernelLogs = true;
            ProtectControlGroups = true;
            ProtectClock = true;
            ProtectHostname = true;
            ProtectProc = "invisible";
            ProcSubset = "pid";
            NoNewPrivileges = true;
            LockPersonality = true;
            MemoryDenyWriteExecute = true;
            RestrictNamespaces = true;
            RestrictRealtime = true;
            RestrictSUIDSGID = true;
            RestrictAddressFamilies = [ "AF_UNIX" ];
            CapabilityBoundingSet = [ "" ];
            SystemCallArchitectures = "native";
            SystemCallFilter = [
              "@system-service"
              "~@privileged @resources"
            ];
            # Go raises its file limit with setrlimit at start and takes no for an answer.
            SystemCallErrorNumber = "EPERM";
          };
        };

        # rcsgate.service comes from the package; these are drop-ins.
        systemd.services.rcsgate = {
          wantedBy = [ "multi-user.target" ];
          requires = [ "rcsgate-setup.service" ];
          after = [ "rcsgate-setup.service" ] ++ homeserverUnit;
          wants = homeserverUnit;
          restartTriggers = [ settingsFile ];
          # On a switch, `systemctl restart` instead of stop + start of the sockets too: the
          # sockets stay with systemd, so an upgrade loses no connection attempt.
          stopIfChanged = false;
        };

        systemd.sockets = lib.mapAttrs (_: s: s // { wantedBy = [ "sockets.target" ]; }) sockets;

        networking.firewall = lib.mkIf cfg.openFirewall {
          allowedUDPPorts = [ cfg.channelPort ];
          allowedTCPPorts = lib.optionals cfg.https.enable [
            80
            443
          ];
        };
      }

      (lib.mkIf (cfg.homeserver == "tuwunel") {
        services.matrix-tuwunel = {
          enable = true;
          settings.global = {
            server_name = cfg.domain;
            # Every *.yaml there is an appservice registration (tuwunel >= 1.6.0).
            appservice_dir = "/run/credentials/tuwunel.service";
          };
        };
        systemd.services.tuwunel = {
          requires = [ "rcsgate-setup.service" ];
          after = [ "rcsgate-setup.service" ];
          # The registration derives from the settings: reload it when they change.
          restartTriggers = [ settingsFile ];
          serviceConfig.LoadCredential = [ "${registrationCredential}:${registrationFile}" ];
        };
      })

      (lib.mkIf (cfg.homeserver == "synapse") {
        services.postgresql = {
          enable = true;
          # Synapse refuses databases that do not sort with the C locale.
          initdbArgs = lib.mkDefault [
            "--locale=C"
            "--encoding=UTF8"
          ];
          ensureDatabases = [ "matrix-synapse" ];
          ensureUsers = [
            {
              name = "matrix-synapse";
              ensureDBOwnership = true;
            }
          ];
        };
        services.matrix-synapse = {
          enable = true;
          settings = {
            server_name = cfg.domain;
            public_baseurl = lib.mkIf cfg.https.enable (lib.mkDefault "https://${cfg.domain}/");
            database = {
              name = "psycopg2";
              args = {
                user = "matrix-synapse";
                database = "matrix-synapse";
                host = "/run/postgresql";
              };
            };
            listeners = lib.mkDefault [
              {
                port = 8008;
                bind_addresses = [
                  "127.0.0.1"
                  "::1"
                ];
                type = "http";
                tls = false;
                x_forwarded = true;
                resources = [
                  {
                    names = [
                      "client"
                      "federation"
                    ];
                    compress = false;
                  }
                ];
              }
            ];
            app_service_config_files = [ synapseRegistration ];
          };
        };
        systemd.services.matrix-synapse = {
          requires = [ "rcsgate-setup.service" ];
          after = [ "rcsgate-setup.service" ];
          # The registration derives from the settings: reload it when they change.
          restartTriggers = [ settingsFile ];
        };
      })
    ]
  );

  meta.maintainers = [ ];
}
