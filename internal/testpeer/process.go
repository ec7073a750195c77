package testpeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	stopGrace    = 10 * time.Second
	pollInterval = 50 * time.Millisecond
	logTailBytes = 4096
)

// process is a homeserver child running in its own process group, with its
// stdout and stderr in one log file. It is shared by all implementations.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when Wait returns
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// startProcess runs bin with args in dir, truncating logPath for output.
// The child is not tied to any context: its lifetime ends with Stop.
func startProcess(bin string, args []string, dir, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testpeer: open log: %w", err)
	}
	// The child holds its own copy of the descriptor after Start.
	defer logFile.Close()

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.Stdin = nil
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testpeer: start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childEnv is our environment minus PPROFLISTEN (Dendrite would open a pprof
// listener on whatever address it names, breaking the loopback-only rule),
// with TMPDIR pointing into the state dir so stray temp files stay there.
func childEnv(dir string) []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PPROFLISTEN=") || strings.HasPrefix(kv, "TMPDIR=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TMPDIR="+dir)
}

// exited reports whether the child has already exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to stopGrace, then
// SIGKILLs it. An exit caused by our own signal is not an error.
func (p *process) stop() error {
	p.stopOnce.Do(func() {
		if p.exited() {
			return
		}
		if err := signalGroup(p.cmd.Process, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("testpeer: SIGTERM: %w", err)
		}
		timer := time.NewTimer(stopGrace)
		defer timer.Stop()
		select {
		case <-p.done:
			return
		case <-timer.C:
		}
		if err := signalGroup(p.cmd.Process, syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = errors.Join(p.stopErr, fmt.Errorf("testpeer: SIGKILL: %w", err))
		}
		<-p.done
		p.stopErr = errors.Join(p.stopErr, fmt.Errorf("testpeer: pid %d ignored SIGTERM for %s and was killed", p.cmd.Process.Pid, stopGrace))
	})
	return p.stopErr
}

// kill SIGKILLs the process group at once and waits for the exit: a power
// cut, for crash tests. Stop afterwards is a no-op.
func (p *process) kill() error {
	var err error
	p.stopOnce.Do(func() {
		if p.exited() {
			return
		}
		if e := signalGroup(p.cmd.Process, syscall.SIGKILL); e != nil && !errors.Is(e, os.ErrProcessDone) {
			err = fmt.Errorf("testpeer: SIGKILL: %w", e)
		}
		<-p.done
	})
	return err
}

// logTail returns the last few KiB of the log, for error messages.
func (p *process) logTail() string {
	return fileTail(p.logPath, logTailBytes)
}

func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(log unavailable: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(log unavailable: %v)", err)
	}
	off := max(st.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(log unavailable: %v)", err)
	}
	s := string(b)
	if off > 0 {
		// Drop the partial first line.
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}

// errExitedEarly marks a child that died before it became ready.
var errExitedEarly = errors.New("homeserver exited before becoming ready")

// waitReady polls GET url until it answers 200, the process exits, or ctx
// ends. It polls with a ticker so the wait is bounded by ctx, not by sleeps.
func waitReady(ctx context.Context, client *http.Client, p *process, url string) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		// Checked first because select picks randomly among ready cases.
		if p.exited() {
			return fmt.Errorf("%w: %v", errExitedEarly, p.waitErr)
		}
		if ok, err := probe(ctx, client, url, p.done); ok {
			// A foreign listener on a recycled port could answer; make sure
			// our child is still the one alive.
			if p.exited() {
				return fmt.Errorf("%w: %v", errExitedEarly, p.waitErr)
			}
			return nil
		} else {
			lastErr = err
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w: %v", errExitedEarly, p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("testpeer: not ready at %s (last probe: %v): %w", url, lastErr, ctx.Err())
		case <-ticker.C:
		}
	}
}

// probe does one GET. It gives up when exited closes, so a foreign listener
// that accepts but never answers cannot delay the report of a dead child.
func probe(ctx context.Context, client *http.Client, url string, exited <-chan struct{}) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	return true, nil
}

// newLoopbackClient returns a client that never uses a proxy: every URL it
// sees is on 127.0.0.1.
func newLoopbackClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
}
