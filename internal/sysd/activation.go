package sysd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// Socket names rcsgate takes from systemd: the FileDescriptorName= of the
// socket units in dist/systemd.
const (
	NameAppservice = "appservice" // TCP, loopback: the homeserver pushes transactions here
	NameHTTPS      = "https"      // TCP 443: the TLS front for Matrix
	NameHTTP       = "http"       // TCP 80: ACME HTTP-01 and redirects
	NameQUIC       = "quic"       // UDP 443: the device channel (a datagram socket)
)

// Names lists the socket names rcsgate knows, in the order they are documented.
var Names = []string{NameAppservice, NameHTTPS, NameHTTP, NameQUIC}

// Sockets are the sockets systemd handed over; a nil one was not handed over
// and is bound by the daemon from its config.
type Sockets struct {
	Appservice net.Listener
	HTTPS      net.Listener
	HTTP       net.Listener
	QUIC       net.PacketConn
}

// Names lists the names of the sockets that were handed over.
func (s Sockets) Names() []string {
	var out []string
	for _, n := range Names {
		if s.get(n) {
			out = append(out, n)
		}
	}
	return out
}

func (s Sockets) get(name string) bool {
	switch name {
	case NameAppservice:
		return s.Appservice != nil
	case NameHTTPS:
		return s.HTTPS != nil
	case NameHTTP:
		return s.HTTP != nil
	case NameQUIC:
		return s.QUIC != nil
	}
	return false
}

// Close closes every socket that was handed over (the daemon's copies:
// systemd keeps its own).
func (s Sockets) Close() {
	for _, l := range []net.Listener{s.Appservice, s.HTTPS, s.HTTP} {
		if l != nil {
			_ = l.Close()
		}
	}
	if s.QUIC != nil {
		_ = s.QUIC.Close()
	}
}

// Activated returns the sockets systemd passed to this process
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), by name, and removes those
// variables from the environment. Without socket activation it returns no
// sockets and no error. A socket with an unknown name, a duplicate name or
// the wrong kind is an error: a unit file that does not match the daemon
// must not half work.
func Activated() (Sockets, error) {
	return FromFiles(activation.Files(true))
}

// FromFiles sorts already-inherited descriptors by name (os.File.Name is
// the FileDescriptorName=, as go-systemd's activation.Files sets it). It
// takes ownership of files: each is closed once converted.
func FromFiles(files []*os.File) (s Sockets, err error) {
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
		if err != nil {
			s.Close()
			s = Sockets{}
		}
	}()
	for _, f := range files {
		name := f.Name()
		if s.get(name) {
			return s, fmt.Errorf("systemd handed over two sockets named %q (FileDescriptorName=); rcsgate takes one of each", name)
		}
		switch name {
		case NameAppservice, NameHTTPS, NameHTTP:
			l, err := streamListener(f)
			if err != nil {
				return s, err
			}
			switch name {
			case NameAppservice:
				s.Appservice = l
			case NameHTTPS:
				s.HTTPS = l
			case NameHTTP:
				s.HTTP = l
			}
		case NameQUIC:
			pc, err := datagramConn(f)
			if err != nil {
				return s, err
			}
			s.QUIC = pc
		default:
			if strings.HasPrefix(name, "LISTEN_FD_") {
				return s, fmt.Errorf("systemd handed over an unnamed socket (%s); set FileDescriptorName= in its socket unit to one of %s", name, strings.Join(Names, ", "))
			}
			return s, fmt.Errorf("systemd handed over a socket named %q (FileDescriptorName=); rcsgate knows only %s", name, strings.Join(Names, ", "))
		}
	}
	return s, nil
}

func streamListener(f *os.File) (net.Listener, error) {
	if err := checkSocket(f, false); err != nil {
		return nil, err
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("systemd socket %q: %w", f.Name(), err)
	}
	return l, nil
}

func datagramConn(f *os.File) (net.PacketConn, error) {
	if err := checkSocket(f, true); err != nil {
		return nil, err
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("systemd socket %q: %w", f.Name(), err)
	}
	if _, ok := pc.(*net.UDPConn); !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("systemd socket %q must be a UDP socket (ListenDatagram=PORT or ADDR:PORT), got a %s socket", f.Name(), pc.LocalAddr().Network())
	}
	return pc, nil
}

var errNotSocket = errors.New("not a socket")
