package backup

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"runtime/debug"
	"strings"
	"time"
)

// FormatVersion is the archive layout this build writes and reads.
const FormatVersion = 1

// ManifestName is the archive's first entry.
const ManifestName = "rcsgate-backup.json"

// maxManifest bounds what restore reads before it trusts anything.
const maxManifest = 1 << 20

// Manifest describes an archive: restore checks every file against it
// before anything is placed.
type Manifest struct {
	Format         int       `json:"format"`
	RcsgateVersion string    `json:"rcsgate_version"`
	Created        time.Time `json:"created"`
	StateDir       string    `json:"state_dir"` // where it was taken; informative
	Files          []File    `json:"files"`
}

// File is one archived file, by slash path relative to the state directory.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   uint32 `json:"mode"`
	SQLite bool   `json:"sqlite,omitempty"` // a VACUUM INTO snapshot
}

// Version is recorded in manifests; set with -ldflags "-X ...backup.Version=...".
var Version = ""

func rcsgateVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)

// checkPath refuses anything that could land outside the state directory or
// clash with restore's own staging names.
func checkPath(p string) error {
	if p == "" || p != path.Clean(p) || path.IsAbs(p) || strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("unsafe path %q in archive", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "." || el == ".." || !safeName.MatchString(el) || strings.HasPrefix(el, ".rcsgate-") {
			return fmt.Errorf("unsafe path %q in archive", p)
		}
	}
	return nil
}

func parseManifest(raw []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("backup format %d is not supported by this rcsgate (it reads format %d)", m.Format, FormatVersion)
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return nil, err
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("manifest lists %q twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || len(f.SHA256) != 64 {
			return nil, fmt.Errorf("manifest entry %q is malformed", f.Path)
		}
	}
	if !seen[ConfigName] {
		return nil, fmt.Errorf("manifest has no %s", ConfigName)
	}
	return &m, nil
}

// fileMode is what restore gives a file, whatever the archive says:
// certificates are public, everything else holds secrets or numbers.
func fileMode(p string) uint32 {
	if !strings.Contains(p, "/") && strings.HasSuffix(p, ".crt") {
		return 0o644
	}
	return 0o600
}
