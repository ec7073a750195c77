// Package execbackend is the "exec" phone backend: it runs an external
// program that reaches the phone network by any means and speaks a
// versioned JSON-lines protocol with it on stdin/stdout (stderr goes to the
// debug log). It restarts the program with backoff when it exits. The
// protocol is specified in docs/backends/exec.md.
package execbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
)

// Name is the backend name reported in Hello.
const Name = "exec"

// Defaults for Config.
const (
	DefaultSendTimeout  = 60 * time.Second
	DefaultHelloTimeout = 30 * time.Second
	DefaultStopGrace    = 5 * time.Second
	// typingTimeout bounds the wait for a typing command's result.
	typingTimeout = 5 * time.Second
	// healthyRun: a program that ran this long restarts from the start of
	// the backoff schedule.
	healthyRun = time.Minute
	// deliverQueue bounds events read but not yet handed to the sink; when
	// it is full further events are nacked ("busy") and offered again.
	deliverQueue = 64
	// maxStderrLine is how much of a stderr line reaches the log.
	maxStderrLine = 512
	// StateSubdir is the program's own directory in the agent's state.
	StateSubdir = "exec"
)

// DefaultRestartBackoff is the restart schedule: 500 ms doubling to 1 min.
var DefaultRestartBackoff = agent.ExponentialSchedule(500*time.Millisecond, time.Minute)

// Duration is the config duration shared by every backend.
type Duration = backend.Duration

// Config is the backend's --backend-config object.
type Config struct {
	Command string            `json:"command"`        // program path (or a name looked up in PATH)
	Args    []string          `json:"args,omitempty"` // its arguments
	Env     map[string]string `json:"env,omitempty"`  // added to the agent's environment
	Dir     string            `json:"dir,omitempty"`  // working directory ("" = the agent's)
	// SendTimeout bounds a send: waiting for the program to be up, and for
	// its result (default 60s). A send that times out is retried (same id).
	SendTimeout Duration `json:"send_timeout,omitempty"`
	// HelloTimeout bounds the wait for the program's hello (default 30s).
	HelloTimeout Duration `json:"hello_timeout,omitempty"`
	// StopGrace is the wait between SIGTERM and SIGKILL (default 5s).
	StopGrace Duration `json:"stop_grace,omitempty"`
	// RestartBackoff is the schedule of pauses before restarting the
	// program; the last entry repeats (default 500ms doubling to 1m).
	RestartBackoff []Duration `json:"restart_backoff,omitempty"`
}

func (c *Config) defaults() error {
	if c.Command == "" {
		return errors.New("exec: config needs \"command\"")
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = Duration(DefaultSendTimeout)
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = Duration(DefaultHelloTimeout)
	}
	if c.StopGrace == 0 {
		c.StopGrace = Duration(DefaultStopGrace)
	}
	for _, d := range []Duration{c.SendTimeout, c.HelloTimeout, c.StopGrace} {
		if d < 0 {
			return errors.New("exec: negative timeout in config")
		}
	}
	for _, d := range c.RestartBackoff {
		if d <= 0 {
			return errors.New("exec: restart_backoff entries must be positive")
		}
	}
	return nil
}

func (c *Config) schedule() []time.Duration {
	if len(c.RestartBackoff) == 0 {
		return slices.Clone(DefaultRestartBackoff)
	}
	s := make([]time.Duration, len(c.RestartBackoff))
	for i, d := range c.RestartBackoff {
		s[i] = time.Duration(d)
	}
	return s
}

// ErrProgramExited is wrapped by the (transient) error of a command the
// program did not answer before it exited.
var ErrProgramExited = errors.New("exec: program exited before answering")

// ErrNotRunning is wrapped by errors of commands given while the program is
// not running.
var ErrNotRunning = errors.New("exec: program is not running")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("exec: backend closed")

// Exec is the backend: the protocol engine plus the supervision of the
// program it runs. Use Open.
type Exec struct {
	engine
	cfg      Config
	done     chan struct{} // the supervisor exited
	restarts atomic.Int64  // launches after the first (tests)

	curProc atomic.Pointer[proc] // the running program (tests)
}

var _ backend.Backend = (*Exec)(nil)

// proc is one run of the program.
type proc struct {
	*peer
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// Open checks cfg and prepares the program's state directory; the program
// starts with Start.
func Open(log zerolog.Logger, stateDir string, cfg Config) (*Exec, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dir, err := programDir(stateDir)
	if err != nil {
		return nil, err
	}
	return &Exec{
		engine: newEngine(log.With().Str("backend", Name).Logger(), dir, time.Duration(cfg.SendTimeout)),
		cfg:    cfg,
		done:   make(chan struct{}),
	}, nil
}

// programDir makes the program's own directory in the agent's state.
func programDir(stateDir string) (string, error) {
	dir := filepath.Join(stateDir, StateSubdir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("exec: state directory: %w", err)
	}
	return dir, nil
}

func (b *Exec) Name() string { return Name }

// Start runs the program and returns once it has said hello (or failed to
// within the hello timeout: then the error says why and nothing keeps
// running). Afterwards the program is restarted with backoff whenever it
// exits, until Close or ctx ends.
func (b *Exec) Start(ctx context.Context, sink backend.Sink) error {
	ctx, err := b.begin(ctx, sink)
	if err != nil {
		return err
	}
	first := make(chan error, 1)
	go b.supervise(ctx, first)
	if err := <-first; err != nil {
		b.cancel()
		<-b.done
		return err
	}
	return nil
}

// Close stops the program (stdin closed and SIGTERM, then SIGKILL after the
// grace period) and waits for it to exit.
func (b *Exec) Close() error {
	started, stop := b.shut()
	if started {
		<-b.done
	}
	stop()
	return nil
}

func (b *Exec) supervise(ctx context.Context, first chan<- error) {
	defer close(b.done)
	bo := &agent.Backoff{Schedule: b.cfg.schedule(), Jitter: agent.DefaultJitter}
	for launches := 0; ; launches++ {
		if launches > 0 {
			b.restarts.Add(1)
		}
		began := time.Now()
		p, err := b.launch(ctx)
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		if err == nil {
			b.curProc.Store(p)
			b.setUp(p.peer)
			select {
			case <-p.ended:
			case <-ctx.Done():
			case <-b.closed:
			}
			b.setDown(p.peer)
			b.stop(p)
			if time.Since(began) >= healthyRun {
				bo.Reset()
			}
		}
		if b.stopping(ctx) {
			return
		}
		wait := bo.Next()
		if err != nil {
			b.log.Warn().Err(err).Dur("retry_in", wait).Msg("phone program did not start")
		} else {
			b.log.Warn().Str("exit", exitString(p.cmd)).Dur("restart_in", wait).Msg("phone program exited; restarting")
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-b.closed:
			t.Stop()
			return
		}
	}
}

func exitString(cmd *exec.Cmd) string {
	if cmd.ProcessState == nil {
		return "unknown"
	}
	return cmd.ProcessState.String()
}

// stop ends p: stdin closed and SIGTERM, SIGKILL after the grace period.
func (b *Exec) stop(p *proc) {
	select {
	case <-p.ended:
		return
	default:
	}
	p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(time.Duration(b.cfg.StopGrace))
	defer t.Stop()
	select {
	case <-p.ended:
	case <-t.C:
		p.log.Warn().Msg("phone program ignored SIGTERM; killing it")
		_ = p.cmd.Process.Kill()
		<-p.ended
	}
}

// launch starts the program and runs the protocol's handshake with it.
func (b *Exec) launch(ctx context.Context) (*proc, error) {
	cmd := exec.Command(b.cfg.Command, b.cfg.Args...)
	cmd.Dir = b.cfg.Dir
	env := os.Environ()
	keys := slices.Collect(maps.Keys(b.cfg.Env))
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+b.cfg.Env[k])
	}
	cmd.Env = append(env, "RCSGATE_STATE_DIR="+b.stateDir, "RCSGATE_EXEC_PROTOCOL="+strconv.Itoa(Protocol))
	cmd.Stderr = &stderrLog{log: b.log}
	cmd.WaitDelay = time.Duration(b.cfg.StopGrace)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec: start %s: %w", filepath.Base(b.cfg.Command), err)
	}
	kill := func() { _ = cmd.Process.Kill() }
	// Once stdout ended the program is exiting (or broke the protocol):
	// reap it, killing it after the grace period.
	reap := func() {
		t := time.AfterFunc(time.Duration(b.cfg.StopGrace), kill)
		_ = cmd.Wait()
		t.Stop()
	}
	p := &proc{peer: newPeer(stdin, b.log.With().Int("pid", cmd.Process.Pid).Logger(), kill, reap), cmd: cmd, stdin: stdin}
	if err := b.connect(ctx, p.peer, stdout, time.Duration(b.cfg.HelloTimeout)); err != nil {
		b.stop(p)
		if !errors.Is(err, ErrClosed) && ctx.Err() == nil {
			err = fmt.Errorf("%w (%s)", err, exitString(cmd))
		}
		return nil, err
	}
	return p, nil
}

// stderrLog logs the program's stderr at debug, one entry per line, cut at
// maxStderrLine bytes and with number-like runs masked. Never parsed.
type stderrLog struct {
	log  zerolog.Logger
	buf  []byte
	skip bool // the current line was cut; drop the rest of it
}

func (s *stderrLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !s.skip {
			room := maxStderrLine - len(s.buf)
			if len(chunk) > room {
				s.buf = append(s.buf, chunk[:room]...)
				s.flush(true)
				s.skip = true
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !s.skip {
			s.flush(false)
		}
		s.skip = false
		p = p[i+1:]
	}
	return n, nil
}

func (s *stderrLog) flush(cut bool) {
	var m bytes.Buffer
	_, _ = redact.Writer{W: &m}.Write(s.buf)
	s.buf = s.buf[:0]
	s.log.Debug().Bool("cut", cut).Str("line", strings.ToValidUTF8(m.String(), "?")).Msg("phone program stderr")
}
