//go:build unix

package sysd

import (
	"fmt"
	"os"
	"syscall"
)

// checkSocket tells a stream listener from a datagram socket before Go
// wraps it, so a mixed-up unit file gets a message naming the fix.
func checkSocket(f *os.File, datagram bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("systemd socket %q: %w", f.Name(), err)
	}
	var typ, listening int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if typ, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE); serr != nil {
			return
		}
		if typ == syscall.SOCK_STREAM {
			listening, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		}
	}); err != nil {
		return fmt.Errorf("systemd socket %q: %w", f.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("systemd socket %q: %w: %w", f.Name(), errNotSocket, serr)
	}
	switch {
	case datagram && typ != syscall.SOCK_DGRAM:
		return fmt.Errorf("systemd socket %q must be a datagram socket: use ListenDatagram= in its socket unit, not ListenStream=", f.Name())
	case !datagram && typ != syscall.SOCK_STREAM:
		return fmt.Errorf("systemd socket %q must be a stream socket: use ListenStream= in its socket unit", f.Name())
	case !datagram && listening == 0:
		return fmt.Errorf("systemd socket %q is not listening: its socket unit must not set Accept=yes", f.Name())
	}
	return nil
}
