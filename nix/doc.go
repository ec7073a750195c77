// Package nix holds no code: its tests keep the Nix packaging honest. They
// parse every .nix file with nix-instantiate, recompute the vendorHash of
// nix/package.nix from go.mod/go.sum, check that the NixOS module matches the
// unit files in dist/systemd, and, when RCSGATE_NIXPKGS_LIB names a nixpkgs
// lib directory, evaluate nix/module.nix with lib.evalModules against stub
// NixOS options (nix/tests/eval.nix).
package nix
