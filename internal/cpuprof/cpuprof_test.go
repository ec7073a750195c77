package cpuprof

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Each rotation leaves a complete profile (gzipped protobuf, as go tool
// pprof reads) and starts the next; after Stop nothing is profiled.
func TestRotate(t *testing.T) {
	if On() {
		t.Skip(EnvVar + " is set for this test process")
	}
	dir = t.TempDir()
	t.Cleanup(func() { Stop(); dir, n = "", 0 })
	if err := start(); err != nil {
		t.Fatal(err)
	}
	if !On() {
		t.Fatal("not profiling after start")
	}
	if err := Rotate(); err != nil {
		t.Fatal(err)
	}
	Stop()
	if On() {
		t.Fatal("still profiling after Stop")
	}
	if err := Rotate(); err != nil { // after Stop: nothing to rotate, no new file
		t.Fatal(err)
	}
	prog := filepath.Base(os.Args[0])
	for i := range 2 {
		raw, err := os.ReadFile(Path(dir, prog, os.Getpid(), i))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("profile %d is not gzip: %v", i, err)
		}
		if _, err := io.ReadAll(zr); err != nil {
			t.Fatalf("profile %d is cut short: %v", i, err)
		}
	}
	if _, err := os.Stat(Path(dir, prog, os.Getpid(), 2)); !os.IsNotExist(err) {
		t.Fatalf("a third profile was started after Stop: %v", err)
	}
}
