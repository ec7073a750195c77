{
  description = "rcsgate: a self-hosted Matrix gateway to RCS and SMS through your own phone";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs:
        let built = pkgs.callPackage ./nix/package.nix { };
        in {
          inherit (built) rcsgate rcsgate-agent;
          default = built.rcsgate;
        });
    };
}
