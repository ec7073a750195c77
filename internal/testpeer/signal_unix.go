//go:build unix

package testpeer

import (
	"errors"
	"os"
	"syscall"
)

// signalGroup signals the child's whole process group (negative pid).
func signalGroup(p *os.Process, sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
