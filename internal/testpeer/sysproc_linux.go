//go:build linux

package testpeer

import "syscall"

// childSysProcAttr puts the child in its own process group so Stop can
// signal everything it spawned, and asks the kernel to SIGKILL it if the test
// binary dies without running cleanups (e.g. on a go test timeout).
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
