package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is a child process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	offset  int64 // log size when started: waitLog reads only this run's lines
	done    chan struct{}
	err     error
}

func (st *Stack) start(name, logPath string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	var offset int64
	if fi, err := f.Stat(); err == nil {
		offset = fi.Size()
	}
	cmd := exec.Command(st.bin(name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("harness: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, offset: offset, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) stop(sig syscall.Signal) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("harness: %s ignored %s for 10s; killed", p.name, sig)
	}
}

// waitFor polls cond until it holds, the process dies, or the deadline.
func (p *proc) waitFor(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("harness: %s exited (%v); log tail:\n%s", p.name, p.err, tail(p.logPath))
		case <-ctx.Done():
			return fmt.Errorf("harness: %s not ready after %s; log tail:\n%s", p.name, limit, tail(p.logPath))
		case <-tick.C:
		}
	}
}

func (p *proc) waitLog(ctx context.Context, needle string, limit time.Duration) error {
	return p.waitFor(ctx, limit, func() (bool, error) {
		b, _ := os.ReadFile(p.logPath)
		if int64(len(b)) < p.offset {
			return false, nil
		}
		return bytes.Contains(b[p.offset:], []byte(needle)), nil
	})
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
