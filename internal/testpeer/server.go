package testpeer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// server is what every homeserver peer shares: one child process serving
// the client API on a loopback port, and shared-secret registration. Dendrite
// and Synapse embed it and add how to configure and start their own binary.
type server struct {
	kind         string
	dir          string
	configPath   string
	serverName   string
	url          string
	sharedSecret string
	logFile      string // inside dir
	client       *http.Client
	proc         *process
	startupTime  time.Duration
	// crashedAtStart, if set, recognises in the log a crash during start-up
	// that a supervisor (systemd's Restart=) would answer by starting the
	// server again: start does the same, on the same port.
	crashedAtStart func(logTail string) bool
}

// prepare does the set-up common to every peer: an absolute, existing state
// directory, the server name and the startup deadline (cancel releases it).
func prepare(ctx context.Context, opts Options) (dir, serverName string, sctx context.Context, cancel context.CancelFunc, err error) {
	if opts.Dir == "" {
		return "", "", nil, nil, errors.New("testpeer: Options.Dir is required")
	}
	if dir, err = filepath.Abs(opts.Dir); err != nil {
		return "", "", nil, nil, fmt.Errorf("testpeer: state dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", nil, nil, fmt.Errorf("testpeer: create state dir: %w", err)
	}
	serverName = opts.ServerName
	if serverName == "" {
		serverName = defaultServerName
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}
	sctx, cancel = context.WithTimeout(ctx, timeout)
	return dir, serverName, sctx, cancel, nil
}

// start runs the binary until the client API answers. Without a fixed
// opts.Port it picks a free loopback port and, when the child lost the race
// for it (portInUse says so from its log), tries another. args gives the
// command line for a port and rewrites whatever else depends on it.
func (s *server) start(ctx context.Context, opts Options, bin string, args func(port int) ([]string, error), portInUse func(logTail string) bool) error {
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			pick := opts.pickPort
			if pick == nil {
				pick = FreeLoopbackPort
			}
			var err error
			if port, err = pick(); err != nil {
				return err
			}
		}
		argv, err := args(port)
		if err != nil {
			return err
		}
		err = s.run(ctx, bin, argv, port)
		if err == nil {
			return nil
		}
		if attempt >= portAttempts || !errors.Is(err, errExitedEarly) {
			return err
		}
		tail := s.proc.logTail()
		if s.crashedAtStart != nil && s.crashedAtStart(tail) {
			opts.Port = port // as a supervisor would: same server, same port
			continue
		}
		if opts.Port != 0 || !portInUse(tail) {
			return err
		}
	}
}

// run starts one process on port and waits for readiness; on failure the
// process is stopped and the error carries the log tail.
func (s *server) run(ctx context.Context, bin string, args []string, port int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	started := time.Now()
	proc, err := startProcess(bin, args, s.dir, filepath.Join(s.dir, s.logFile))
	if err != nil {
		return err
	}
	s.proc = proc
	s.url = "http://" + addr
	if err := waitReady(ctx, s.client, proc, s.url+"/_matrix/client/versions"); err != nil {
		stopErr := proc.stop()
		return errors.Join(
			fmt.Errorf("testpeer: %s on %s: %w\n--- tail of %s ---\n%s", s.kind, addr, err, proc.logPath, proc.logTail()),
			stopErr,
		)
	}
	s.startupTime = time.Since(started)
	return nil
}

// Kind implements Homeserver.
func (s *server) Kind() string { return s.kind }

// URL implements Homeserver.
func (s *server) URL() string { return s.url }

// ServerName implements Homeserver.
func (s *server) ServerName() string { return s.serverName }

// LogPath implements Homeserver.
func (s *server) LogPath() string { return s.proc.logPath }

// Dir is the state directory.
func (s *server) Dir() string { return s.dir }

// ConfigPath is the generated config file.
func (s *server) ConfigPath() string { return s.configPath }

// SharedSecret is the registration shared secret, for callers that want to
// drive /_synapse/admin/v1/register themselves.
func (s *server) SharedSecret() string { return s.sharedSecret }

// StartupTime is how long the last start took from exec to readiness.
func (s *server) StartupTime() time.Duration { return s.startupTime }

// RegisterUser implements Homeserver.
func (s *server) RegisterUser(ctx context.Context, localpart, password string, admin bool) (string, error) {
	acct, err := s.RegisterAccount(ctx, localpart, password, admin)
	return acct.UserID, err
}

// RegisterAccount implements Homeserver.
func (s *server) RegisterAccount(ctx context.Context, localpart, password string, admin bool) (Account, error) {
	return registerSharedSecret(ctx, s.client, s.url, s.sharedSecret, localpart, password, admin)
}

// Kill implements Homeserver.
func (s *server) Kill() error {
	err := s.proc.kill()
	s.client.CloseIdleConnections()
	return err
}

// Stop implements Homeserver.
func (s *server) Stop() error {
	err := s.proc.stop()
	s.client.CloseIdleConnections()
	return err
}
