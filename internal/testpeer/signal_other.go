//go:build !unix

package testpeer

import (
	"os"
	"syscall"
)

// Without process groups, only the child itself can be signalled; SIGTERM is
// not deliverable everywhere, so fall back to Kill.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return p.Kill()
	}
	return p.Signal(sig)
}
