package nix_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The repository root: tests run in nix/.
const root = ".."

// dummyStore keeps nix-instantiate off /nix/store and the daemon socket, so
// the checks also run as an unprivileged user (they never build anything).
var dummyStore = []string{"--store", "dummy://"}

// needNix returns the path of a Nix tool, or skips the test where Nix is not
// installed (CI installs Debian's nix-bin; with CI set, a missing tool fails).
func needNix(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := tool + " not found: install Nix (Debian: apt-get install nix-bin) to run the Nix checks"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nixFiles lists every .nix file of the repository (not build outputs or
// state directories).
func nixFiles(t *testing.T) []string {
	t.Helper()
	skip := map[string]bool{".git": true, "bin": true, "demo-state": true, "vendor": true, "node_modules": true}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (skip[d.Name()] || strings.HasPrefix(d.Name(), "result")) {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && strings.HasSuffix(path, ".nix") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestNixFilesParse(t *testing.T) {
	nixInstantiate := needNix(t, "nix-instantiate")
	files := nixFiles(t)
	for _, want := range []string{"flake.nix", "nix/package.nix", "nix/module.nix", "nix/appliance.nix", "nix/tests/vm-test.nix"} {
		found := false
		for _, f := range files {
			found = found || filepath.ToSlash(f) == "../"+want
		}
		if !found {
			t.Errorf("%s is missing", want)
		}
	}
	for _, f := range files {
		cmd := exec.Command(nixInstantiate, append(dummyStore, "--parse", f)...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = nil, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, stderr.String())
		}
	}
	t.Logf("%d .nix files parse", len(files))
}

var (
	vendorHashRe = regexp.MustCompile(`vendorHash = "(sha256-[A-Za-z0-9+/]{43}=)";`)
	builderRe    = regexp.MustCompile(`buildGo1(\d+)Module`)
)

// TestVendorHash recomputes the NAR hash of `go mod vendor` (what buildGoModule's
// goModules fixed-output derivation checks) and compares it with nix/package.nix.
func TestVendorHash(t *testing.T) {
	nixBin := needNix(t, "nix")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	pkg := read(t, "nix/package.nix")
	m := vendorHashRe.FindAllStringSubmatch(pkg, -1)
	if len(m) != 1 {
		t.Fatalf("nix/package.nix: want exactly one vendorHash = \"sha256-...\"; line, found %d", len(m))
	}
	have := m[0][1]

	dir := filepath.Join(t.TempDir(), "vendor")
	vendor := exec.Command(goBin, "mod", "vendor", "-o", dir)
	vendor.Dir = root
	vendor.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	hash := exec.Command(nixBin, "--extra-experimental-features", "nix-command", "hash", "path", dir)
	out, err := hash.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("nix hash path: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("nix hash path: %v", err)
	}
	want := strings.TrimSpace(string(out))
	if have == want {
		return
	}

	note := ""
	goVersion, _ := exec.Command(goBin, "env", "GOVERSION").Output()
	if b := builderRe.FindStringSubmatch(pkg); b != nil && !strings.HasPrefix(strings.TrimSpace(string(goVersion)), "go1."+b[1]) {
		note = "\n(note: this go is " + strings.TrimSpace(string(goVersion)) + " but nix/package.nix builds with Go 1." + b[1] +
			"; compute the hash with that minor version if they disagree)"
	}
	t.Fatalf("vendorHash in nix/package.nix is stale (go.mod/go.sum or the import graph changed):\n"+
		"  nix/package.nix: %s\n  go mod vendor:   %s\n"+
		"fix: set  vendorHash = \"%s\";  in nix/package.nix\n"+
		"by hand: GOWORK=off GOFLAGS= go mod vendor -o /tmp/v && nix --extra-experimental-features nix-command hash path /tmp/v%s",
		have, want, want, note)
}

// TestFlakeLock checks that flake.lock pins what flake.nix asks for, with a
// full revision and a NAR hash.
func TestFlakeLock(t *testing.T) {
	var lock struct {
		Nodes map[string]struct {
			Locked struct {
				LastModified int64  `json:"lastModified"`
				NarHash      string `json:"narHash"`
				Owner        string `json:"owner"`
				Repo         string `json:"repo"`
				Rev          string `json:"rev"`
				Type         string `json:"type"`
			} `json:"locked"`
			Original struct {
				Owner string `json:"owner"`
				Ref   string `json:"ref"`
				Repo  string `json:"repo"`
				Type  string `json:"type"`
			} `json:"original"`
		} `json:"nodes"`
		Root    string `json:"root"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal([]byte(read(t, "flake.lock")), &lock); err != nil {
		t.Fatalf("flake.lock: %v", err)
	}
	n, ok := lock.Nodes["nixpkgs"]
	if !ok || lock.Version != 7 || lock.Root != "root" {
		t.Fatalf("flake.lock: want version 7, root \"root\" and a nixpkgs node")
	}
	url := regexp.MustCompile(`inputs\.nixpkgs\.url = "github:NixOS/nixpkgs/([^"]+)";`).FindStringSubmatch(read(t, "flake.nix"))
	if url == nil {
		t.Fatal(`flake.nix: no inputs.nixpkgs.url = "github:NixOS/nixpkgs/<ref>";`)
	}
	if n.Original.Ref != url[1] || n.Original.Owner != "NixOS" || n.Original.Repo != "nixpkgs" || n.Original.Type != "github" {
		t.Errorf("flake.lock original %+v does not match flake.nix's github:NixOS/nixpkgs/%s", n.Original, url[1])
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(n.Locked.Rev) ||
		!regexp.MustCompile(`^sha256-[A-Za-z0-9+/]{43}=$`).MatchString(n.Locked.NarHash) ||
		n.Locked.LastModified < 1.7e9 || n.Locked.Type != "github" {
		t.Errorf("flake.lock locked nixpkgs is incomplete: %+v", n.Locked)
	}
}

// unitValues returns the values of Key= in a unit file.
func unitValues(unit, key string) []string {
	var out []string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestModuleMatchesShippedUnits: nix/module.nix adds drop-ins to the unit
// files in dist/systemd; the names, addresses and identity it assumes must be
// the ones those files have.
func TestModuleMatchesShippedUnits(t *testing.T) {
	module := read(t, "nix/module.nix")
	service := read(t, "dist/systemd/rcsgate.service")

	for name, fd := range map[string]string{"appservice": "appservice", "https": "https", "http": "http", "quic": "quic"} {
		unit := read(t, "dist/systemd/rcsgate-"+name+".socket")
		if got := unitValues(unit, "FileDescriptorName"); len(got) != 1 || got[0] != fd {
			t.Errorf("rcsgate-%s.socket: FileDescriptorName=%v, want %s", name, got, fd)
		}
		if !strings.Contains(module, "rcsgate-"+name) {
			t.Errorf("nix/module.nix does not manage rcsgate-%s.socket", name)
		}
	}

	shipped := func(key string) string {
		m := regexp.MustCompile(`(?s)shipped = \{.*?` + key + ` = "([^"]*)";`).FindStringSubmatch(module)
		if m == nil {
			t.Fatalf("nix/module.nix: no shipped.%s", key)
		}
		return m[1]
	}
	if got := unitValues(read(t, "dist/systemd/rcsgate-appservice.socket"), "ListenStream"); len(got) != 1 || got[0] != shipped("appservice") {
		t.Errorf("rcsgate-appservice.socket ListenStream=%v, nix/module.nix assumes %s", got, shipped("appservice"))
	}
	if got := unitValues(read(t, "dist/systemd/rcsgate-quic.socket"), "ListenDatagram"); len(got) != 1 || got[0] != shipped("quic") {
		t.Errorf("rcsgate-quic.socket ListenDatagram=%v, nix/module.nix assumes %s", got, shipped("quic"))
	}
	// The default appservice.listen must be the shipped socket's address.
	if !regexp.MustCompile(`appservice\.listen = mkOption \{[^}]*default = "` + regexp.QuoteMeta(shipped("appservice")) + `";`).MatchString(module) {
		t.Errorf("nix/module.nix: settings.appservice.listen default is not %s", shipped("appservice"))
	}

	// rcsgate-setup.service and the admin command run as the same dynamic user,
	// in the same state directory, and write the config ExecStart reads.
	for key, want := range map[string]string{"DynamicUser": "yes", "User": "rcsgate", "StateDirectory": "rcsgate", "Type": "notify"} {
		if got := unitValues(service, key); len(got) != 1 || got[0] != want {
			t.Errorf("rcsgate.service: %s=%v, nix/module.nix assumes %s", key, got, want)
		}
	}
	exec := unitValues(service, "ExecStart")
	if len(exec) != 1 || !strings.HasPrefix(exec[0], "@BINDIR@/rcsgate ") || !strings.Contains(exec[0], "--config %S/rcsgate/config.yaml") {
		t.Errorf("rcsgate.service: ExecStart=%v, nix/module.nix writes /var/lib/rcsgate/config.yaml and substitutes @BINDIR@", exec)
	}
	if !strings.Contains(module, `stateDir = "/var/lib/rcsgate";`) {
		t.Error("nix/module.nix: stateDir is not /var/lib/rcsgate (%S/rcsgate)")
	}
	if !strings.Contains(read(t, "nix/package.nix"), "dist/systemd/*.service dist/systemd/*.socket") {
		t.Error("nix/package.nix does not install dist/systemd's units")
	}
}

// TestModuleEval evaluates nix/module.nix and nix/appliance.nix with
// lib.evalModules against stub NixOS options (nix/tests/eval.nix).
func TestModuleEval(t *testing.T) {
	libDir := os.Getenv("RCSGATE_NIXPKGS_LIB")
	if libDir == "" {
		t.Skip("RCSGATE_NIXPKGS_LIB is not set: skipping the lib.evalModules test of nix/module.nix; " +
			"point it at a nixpkgs lib directory, e.g. github.com/nix-community/nixpkgs.lib at 45c0f194 " +
			"(newer lib needs a newer Nix than Debian's 2.8): RCSGATE_NIXPKGS_LIB=/tmp/nixpkgs-lib/lib")
	}
	nixInstantiate := needNix(t, "nix-instantiate")
	if _, err := os.Stat(filepath.Join(libDir, "lib", "default.nix")); err == nil {
		libDir = filepath.Join(libDir, "lib")
	}
	abs, err := filepath.Abs(libDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "modules.nix")); err != nil {
		t.Fatalf("RCSGATE_NIXPKGS_LIB=%s is not a nixpkgs lib directory (no modules.nix)", libDir)
	}

	cmd := exec.Command(nixInstantiate, append(dummyStore, "--eval", "--strict", "--json",
		filepath.Join(root, "nix", "tests", "eval.nix"), "--argstr", "libDir", abs)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("evaluating nix/tests/eval.nix: %v\n%s", err, stderr.String())
	}
	var checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &checks); err != nil {
		t.Fatalf("nix/tests/eval.nix output: %v\n%s", err, stdout.String())
	}
	if len(checks) == 0 {
		t.Fatal("nix/tests/eval.nix returned no checks")
	}
	for _, c := range checks {
		t.Run(c.Name, func(t *testing.T) {
			if !c.OK {
				t.Errorf("failed; evaluated value:\n%s", c.Detail)
			}
		})
	}
}
