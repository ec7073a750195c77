# rcsgate and rcsgate-agent, built from this repository with nixpkgs' Go builder.
#
# go.mod says `go 1.26.0`, so the builder is buildGo126Module (Go 1.26.x in nixpkgs 26.05).
# vendorHash must follow go.mod/go.sum and the import graph; nix/nix_test.go recomputes it
# (`go test ./nix/`) and prints the new value when it is stale. By hand:
#   GOWORK=off GOFLAGS= go mod vendor -o /tmp/v && nix --extra-experimental-features nix-command hash path /tmp/v
{ lib, buildGo126Module, go_1_26 }:

let
  version = "0.1.0";

  # Every Go package of the module stays in (go mod vendor, and so vendorHash, depends on the
  # whole import graph); what is not source stays out, so editing docs or Nix does not rebuild.
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString ../. + "/") (toString path);
        top = builtins.head (lib.splitString "/" rel);
      in
      !(builtins.elem top [
        "bin"
        "demo-state"
        "docs"
        "nix"
        "flake.nix"
        "flake.lock"
        ".ci"
      ]);
  };

  vendorHash = "sha256-fcCZqgZAs59hleTYy8/2GV0dybVPvakWUKal+f/WVJE=";

  meta = {
    homepage = "https://github.com/rcsgate/rcsgate";
    license = lib.licenses.asl20;
  };

  agentArgs = {
    pname = "rcsgate-agent";
    inherit version src vendorHash;
    subPackages = [ "cmd/rcsgate-agent" ];
    ldflags = [ "-s" "-w" ];
    # Pure Go: agent/... and internal/wire import neither mautrix nor cgo (a Go test checks it).
    env.CGO_ENABLED = "0";
    doCheck = false;
    meta = meta // {
      description = "Device agent for rcsgate: relays a phone's messages over QUIC";
      mainProgram = "rcsgate-agent";
    };
  };
in
{
  # The bridge needs cgo (SQLite); goolm is mautrix's pure-Go Olm, so no libolm.
  rcsgate = buildGo126Module {
    pname = "rcsgate";
    inherit version src vendorHash;
    subPackages = [ "cmd/rcsgate" ];
    tags = [ "goolm" ];
    ldflags = [ "-s" "-w" ];
    doCheck = false; # the suite needs Dendrite and loopback networking; CI runs it (make test)

    # The systemd units that ship with the source, so NixOS runs the very files
    # `systemd-analyze verify` / `security` check in CI (systemd.packages picks them up).
    postInstall = ''
      install -D -m 0644 -t $out/lib/systemd/system dist/systemd/*.service dist/systemd/*.socket
      substituteInPlace $out/lib/systemd/system/rcsgate.service --replace-fail '@BINDIR@' "$out/bin"
      if grep -l '@[A-Z_]*@' $out/lib/systemd/system/*; then
        echo "the unit files above still have a @...@ placeholder" >&2
        exit 1
      fi
    '';

    meta = meta // {
      description = "Matrix bridge to RCS and SMS through your own phone";
      mainProgram = "rcsgate";
      platforms = lib.platforms.linux;
    };
  };

  rcsgate-agent = buildGo126Module (
    agentArgs
    // {
      meta = agentArgs.meta // {
        platforms = lib.platforms.linux;
      };
    }
  );

  # The agent for Android phones (Termux), android/arm64, built on any Linux host.
  #
  # Not pkgsCross.aarch64-android-prebuilt: nixpkgs maps a platform to GOOS through
  # `parsed.kernel.name`, which is "linux" for Android, so that route yields a linux/arm64
  # binary (and drags in the Android NDK stdenv); Go's own GOOS=android is what Termux wants
  # (Android's DNS and TLS roots). Not `env.GOOS` either: buildGoModule overwrites env.GOOS and
  # env.GOARCH with `go.GOOS`/`go.GOARCH`. So the Go given to the builder carries the target.
  rcsgate-agent-android-arm64 =
    (buildGo126Module.override {
      go = go_1_26 // {
        GOOS = "android";
        GOARCH = "arm64";
      };
    })
      (
        agentArgs
        // {
          pname = "rcsgate-agent-android-arm64";
          # A cross build from `go install` lands in bin/android_arm64/.
          postInstall = ''
            if [ -d $out/bin/android_arm64 ]; then
              mv $out/bin/android_arm64/* $out/bin/
              rmdir $out/bin/android_arm64
            fi
          '';
          # Host binutils cannot strip an aarch64 ELF, and it has no Nix store rpath to shrink.
          dontStrip = true;
          dontPatchELF = true;
          meta = agentArgs.meta // {
            description = "rcsgate-agent for Android phones (GOOS=android GOARCH=arm64), to copy onto the phone";
            platforms = lib.platforms.linux;
          };
        }
      );
}
