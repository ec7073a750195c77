# rcsgate and rcsgate-agent, built from this repository with nixpkgs' Go builder.
# vendorHash must follow go.mod/go.sum: recompute with
#   GOWORK=off GOFLAGS= go mod vendor -o /tmp/v && nix hash path /tmp/v
{ lib, buildGoModule }:

let
  common = {
    version = "0.1.0";
    src = lib.cleanSource ../.;
    vendorHash = "sha256-6IjeuEVwS9bv8HPxCr6ykylfB2x31gRWRgLUPTesjIM=";
    ldflags = [ "-s" "-w" ];
    meta = {
      homepage = "https://github.com/rcsgate/rcsgate";
      license = lib.licenses.asl20;
      platforms = lib.platforms.linux;
    };
  };
in
{
  # The bridge needs cgo (SQLite); goolm is mautrix's pure-Go Olm, so no libolm.
  rcsgate = buildGoModule (common // {
    pname = "rcsgate";
    subPackages = [ "cmd/rcsgate" ];
    tags = [ "goolm" ];
    doCheck = false; # the test suite needs Dendrite; CI runs it
    meta = common.meta // {
      description = "Matrix bridge to RCS and SMS through your own phone";
      mainProgram = "rcsgate";
    };
  });

  # The agent is pure Go so it cross-builds for Android (GOOS=android GOARCH=arm64).
  rcsgate-agent = buildGoModule (common // {
    pname = "rcsgate-agent";
    subPackages = [ "cmd/rcsgate-agent" ];
    env.CGO_ENABLED = "0";
    doCheck = false;
    meta = common.meta // {
      description = "Device agent for rcsgate: relays a phone's messages over QUIC";
      mainProgram = "rcsgate-agent";
    };
  });
}
