// Package testpeer starts real Matrix homeservers on loopback for
// integration tests, demos and benchmarks.
//
// Homeservers are only ever run as external binaries (never imported as Go
// modules) so that their licences do not reach this module: Dendrite,
// Synapse and tuwunel (the appliance's homeserver) sit behind one small
// Homeserver interface; Start picks one by name.
package testpeer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Homeserver is a running Matrix homeserver for tests.
type Homeserver interface {
	// Kind names the implementation, e.g. "dendrite".
	Kind() string
	// URL is the client-server API base URL, e.g. "http://127.0.0.1:41234".
	URL() string
	// ServerName is the Matrix server name, e.g. "localhost".
	ServerName() string
	// RegisterUser creates a user through shared-secret registration
	// (/_synapse/admin/v1/register) and returns the full user ID.
	RegisterUser(ctx context.Context, localpart, password string, admin bool) (string, error)
	// RegisterAccount is RegisterUser that also returns the access token and
	// device the registration created, which saves tests a login round trip.
	RegisterAccount(ctx context.Context, localpart, password string, admin bool) (Account, error)
	// LogPath is the file holding the homeserver's stdout and stderr.
	LogPath() string
	// Stop terminates the homeserver: SIGTERM, wait with a deadline, then
	// SIGKILL. It is idempotent.
	Stop() error
	// Kill SIGKILLs the homeserver (crash tests); Start with the same
	// Options.Dir brings it back with its data.
	Kill() error
}

// Account is the result of a successful registration.
type Account struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// Options configures a homeserver start.
type Options struct {
	// Dir is the state directory (created if needed); config, keys, SQLite
	// databases and logs live here.
	Dir string
	// ServerName defaults to "localhost".
	ServerName string
	// Port is the loopback HTTP port; 0 picks a free one.
	Port int
	// AppserviceRegistrations are paths to appservice registration YAML
	// files, passed to the homeserver config.
	AppserviceRegistrations []string
	// BinDir holds the homeserver binaries; "" means FindBinDir().
	BinDir string
	// StartTimeout bounds the wait for readiness; 0 means 60s. The context
	// passed to the start function can shorten it further.
	StartTimeout time.Duration

	// pickPort replaces FreeLoopbackPort in tests of the port-retry path.
	pickPort func() (int, error)
}

const (
	defaultServerName   = "localhost"
	defaultStartTimeout = 60 * time.Second
	modulePath          = "github.com/rcsgate/rcsgate"
)

// ErrBinaryMissing reports that a homeserver binary is not installed.
var ErrBinaryMissing = errors.New("homeserver binary missing (run `make tools` from the repository root)")

// FindBinDir returns $RCSGATE_BIN if set, else <repo root>/bin, where the
// repo root is the nearest directory above the working directory (or the
// executable's directory) whose go.mod declares module
// github.com/rcsgate/rcsgate.
func FindBinDir() (string, error) {
	if dir := os.Getenv("RCSGATE_BIN"); dir != "" {
		return filepath.Abs(dir)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	// The executable's dir helps demo binaries started from elsewhere; test
	// binaries live in a temp dir, where the walk simply finds nothing.
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, start := range starts {
		if root, ok := findModuleRoot(start); ok {
			return filepath.Join(root, "bin"), nil
		}
	}
	return "", fmt.Errorf("testpeer: no go.mod for module %s above %v; set RCSGATE_BIN", modulePath, starts)
}

func findModuleRoot(dir string) (string, bool) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	for {
		if modFileDeclares(filepath.Join(dir, "go.mod"), modulePath) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// modFileDeclares reads only the module directive, which avoids depending on
// golang.org/x/mod for one line.
func modFileDeclares(path, module string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "module")
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		if i := strings.Index(rest, "//"); i >= 0 {
			rest = rest[:i]
		}
		name := strings.TrimSpace(rest)
		if unq, err := strconv.Unquote(name); err == nil {
			name = unq
		}
		return name == module
	}
	return false
}

// FreeLoopbackPort picks a free TCP port on 127.0.0.1. The port is released
// before returning, so another process could take it; StartDendrite retries
// with a new port when that happens and Options.Port was 0.
func FreeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testpeer: pick loopback port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("testpeer: release loopback port: %w", err)
	}
	return port, nil
}

// findBinary resolves name inside binDir (or FindBinDir) and checks it is an
// executable file.
func findBinary(binDir, name string) (string, error) {
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return "", err
		}
	}
	path := filepath.Join(binDir, name)
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("testpeer: %s: %w: %w", path, ErrBinaryMissing, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("testpeer: %s is not an executable file: %w", path, ErrBinaryMissing)
	}
	return path, nil
}
