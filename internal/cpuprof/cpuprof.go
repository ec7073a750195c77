// Package cpuprof writes CPU profiles of a running rcsgate or agent for a
// benchmark to read (go tool pprof). It is off unless the environment
// variable RCSGATE_CPUPROFILE names a directory; then the process profiles
// itself from start-up into "<program>-<pid>-<n>.pprof" there, and each
// SIGUSR2 closes the current profile and starts the next one, so a
// benchmark can cut one profile per phase. A profile holds function names
// and sample counts only, never data. It imports nothing but the standard
// library, so the agent may use it.
package cpuprof

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"
)

// EnvVar names the directory profiles go to.
const EnvVar = "RCSGATE_CPUPROFILE"

// RotateSignal ends the current profile and starts the next.
const RotateSignal = syscall.SIGUSR2

var (
	mu  sync.Mutex
	dir string
	n   int
	cur *os.File
)

func init() {
	d := os.Getenv(EnvVar)
	if d == "" {
		return
	}
	dir = d
	if err := start(); err != nil {
		fmt.Fprintf(os.Stderr, "cpuprof: %v (profiling off)\n", err)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, RotateSignal)
	go func() {
		for range sig {
			if err := Rotate(); err != nil {
				fmt.Fprintf(os.Stderr, "cpuprof: %v\n", err)
			}
		}
	}()
}

// On reports whether this process profiles itself.
func On() bool {
	mu.Lock()
	defer mu.Unlock()
	return cur != nil
}

// Path is the file profile n of process pid of program prog goes to.
func Path(dir, prog string, pid, n int) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%d-%d.pprof", prog, pid, n))
}

func start() error {
	f, err := os.OpenFile(Path(dir, filepath.Base(os.Args[0]), os.Getpid(), n), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	cur = f
	return nil
}

// Rotate ends the current profile and starts profile n+1.
func Rotate() error {
	mu.Lock()
	defer mu.Unlock()
	if cur == nil {
		return nil
	}
	stopLocked()
	n++
	return start()
}

// Stop ends profiling and writes the current profile out; the mains call
// it on the way out (a killed process leaves its last profile cut short).
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	stopLocked()
}

func stopLocked() {
	if cur == nil {
		return
	}
	pprof.StopCPUProfile()
	_ = cur.Close()
	cur = nil
}
