package sysd_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rcsgate/rcsgate/internal/sysd"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// maxExposure is the ceiling for `systemd-analyze security` (issue 5).
const maxExposure = 2.0

// repoRoot is two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// need fails (never skips) when a tool is missing: CI installs it.
func need(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %q (apt-get install %s); .ci/run does this", tool, debianPackage, debianPackage)
	}
	return p
}

// rcsgateBin is the built daemon: $RCSGATE_BIN or the repository's bin/.
func rcsgateBin(t *testing.T) string {
	t.Helper()
	dir, err := testpeer.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rcsgate")
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing or not executable: run `make build` first (%v)", bin, err)
	}
	return bin
}

// installUnits runs `make install-units` — the path packages use — into a
// temp dir with @BINDIR@ pointing at the built binary, and returns the unit dir.
func installUnits(t *testing.T) string {
	t.Helper()
	makeBin := need(t, "make", "make")
	dest := t.TempDir()
	cmd := exec.Command(makeBin, "-s", "--no-print-directory", "install-units",
		"DESTDIR="+dest, "UNITDIR=/units", "BINDIR="+filepath.Dir(rcsgateBin(t)))
	cmd.Dir = repoRoot(t)
	// Not the parent make's jobserver or flags (`make test` runs us).
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "MAKEFLAGS=") && !strings.HasPrefix(e, "MFLAGS=") && !strings.HasPrefix(e, "MAKELEVEL=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install-units: %v\n%s", err, out)
	}
	dir := filepath.Join(dest, "units")
	shipped, _ := filepath.Glob(filepath.Join(repoRoot(t), "dist", "systemd", "*"))
	installed, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(shipped) == 0 || len(installed) != len(shipped) {
		t.Fatalf("shipped %v, installed %v", shipped, installed)
	}
	for _, p := range installed {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("@")) && regexp.MustCompile(`@[A-Z_]+@`).Match(raw) {
			t.Fatalf("%s: placeholder left after install: %s", p, regexp.MustCompile(`@[A-Z_]+@`).Find(raw))
		}
	}
	return dir
}

var unknownDirective = regexp.MustCompile(`(?i)unknown (key|section|lvalue)|ignoring`)

func TestUnitsVerify(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	dir := installUnits(t)
	units, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, u := range units {
		t.Run(filepath.Base(u), func(t *testing.T) {
			out, err := exec.Command(analyze, "verify", "--man=no", u).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze verify --man=no %s: %v\n%s", filepath.Base(u), err, out)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if unknownDirective.MatchString(line) || strings.Contains(line, "rcsgate") {
					t.Errorf("systemd-analyze verify: %s", line)
				}
			}
		})
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for rcsgate\.service: ([0-9]+(?:\.[0-9]+)?)`)

func TestServiceExposure(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	unit := filepath.Join(installUnits(t), "rcsgate.service")
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security --offline=yes: %v; no exposure line in:\n%s", err, out)
	}
	score, perr := strconv.ParseFloat(string(m[1]), 64)
	if perr != nil {
		t.Fatal(perr)
	}
	t.Logf("%s", bytes.TrimSpace(m[0]))
	if score > maxExposure {
		t.Fatalf("exposure %.1f > %.1f:\n%s", score, maxExposure, out)
	}
	if err != nil { // a non-zero exit with a good score would mean something else broke
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
}

// unitFile is a parsed unit: section → key → values (in order).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// The unit files and the daemon agree: every socket unit hands over a name
// the daemon knows, to rcsgate.service; the service is Type=notify with a
// watchdog and takes the core sockets.
func TestUnitsMatchDaemon(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "dist", "systemd")
	svc := parseUnit(t, filepath.Join(dir, "rcsgate.service"))
	for k, want := range map[string]string{"Type": "notify", "WatchdogSec": "30s", "Restart": "on-failure", "DynamicUser": "yes", "StateDirectory": "rcsgate"} {
		if got := svc.get("Service", k); got != want {
			t.Errorf("rcsgate.service %s=%q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(svc.get("Service", "ExecStart"), "@BINDIR@/rcsgate serve ") {
		t.Errorf("ExecStart=%q", svc.get("Service", "ExecStart"))
	}
	sockets := strings.Fields(svc.get("Service", "Sockets"))
	socketFiles, _ := filepath.Glob(filepath.Join(dir, "*.socket"))
	var names []string
	for _, p := range socketFiles {
		s := parseUnit(t, p)
		name := s.get("Socket", "FileDescriptorName")
		names = append(names, name)
		if s.get("Socket", "Service") != "rcsgate.service" {
			t.Errorf("%s: Service=%q", filepath.Base(p), s.get("Socket", "Service"))
		}
		if want := "rcsgate-" + name + ".socket"; filepath.Base(p) != want {
			t.Errorf("%s names its fd %q; expected file %s", filepath.Base(p), name, want)
		}
		stream, dgram := s.get("Socket", "ListenStream"), s.get("Socket", "ListenDatagram")
		if (name == sysd.NameQUIC) != (dgram != "") || (name == sysd.NameQUIC) == (stream != "") {
			t.Errorf("%s: ListenStream=%q ListenDatagram=%q for %q", filepath.Base(p), stream, dgram, name)
		}
		if s.get("Socket", "Accept") == "yes" {
			t.Errorf("%s: Accept=yes", filepath.Base(p))
		}
	}
	slices.Sort(names)
	want := slices.Clone(sysd.Names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("socket units name %v; the daemon takes %v", names, want)
	}
	for _, s := range []string{"rcsgate-appservice.socket", "rcsgate-quic.socket"} {
		if !slices.Contains(sockets, s) {
			t.Errorf("rcsgate.service Sockets= lacks %s", s)
		}
	}
	for _, s := range sockets {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			t.Errorf("Sockets= names %s, which is not shipped", s)
		}
	}
}
