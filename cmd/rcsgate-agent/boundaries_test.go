package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func goTool(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestBoundaries keeps the agent free of Matrix and cgo: it must build for
// Android with CGO_ENABLED=0.
func TestBoundaries(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	goBin := goTool(t)

	t.Run("no matrix or sqlite in the dependency graph", func(t *testing.T) {
		cmd := exec.Command(goBin, "list", "-deps", "./agent/...", "./cmd/rcsgate-agent")
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, stderrOf(err))
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "maunium.net") || strings.Contains(dep, "mattn/go-sqlite3") {
				t.Errorf("agent depends on %s", dep)
			}
		}
	})

	t.Run("cross-builds for android/arm64 without cgo", func(t *testing.T) {
		cmd := exec.Command(goBin, "build", "-o", os.DevNull, "./cmd/rcsgate-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=android", "GOARCH=arm64")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("CGO_ENABLED=0 GOOS=android GOARCH=arm64 go build: %v\n%s", err, out)
		}
	})
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
