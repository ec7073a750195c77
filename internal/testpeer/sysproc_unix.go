//go:build unix && !linux

package testpeer

import "syscall"

// childSysProcAttr puts the child in its own process group so Stop can
// signal everything it spawned.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
