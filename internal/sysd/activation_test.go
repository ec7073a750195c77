package sysd_test

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/rcsgate/rcsgate/internal/sysd"
)

// named returns a duplicate of c's socket as an *os.File called name, as
// go-systemd's activation.Files returns inherited descriptors.
func named(t *testing.T, c interface{ File() (*os.File, error) }, name string) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), name)
}

func tcpListener(t *testing.T) *net.TCPListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

func udpConn(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

func TestFromFilesByName(t *testing.T) {
	as, https, http, quic := tcpListener(t), tcpListener(t), tcpListener(t), udpConn(t)
	s, err := sysd.FromFiles([]*os.File{
		named(t, quic, "quic"), named(t, as, "appservice"), named(t, http, "http"), named(t, https, "https"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		name      string
		got, want string
	}{
		{"appservice", s.Appservice.Addr().String(), as.Addr().String()},
		{"https", s.HTTPS.Addr().String(), https.Addr().String()},
		{"http", s.HTTP.Addr().String(), http.Addr().String()},
		{"quic", s.QUIC.LocalAddr().String(), quic.LocalAddr().String()},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, c.got, c.want)
		}
	}
	if got := strings.Join(s.Names(), ","); got != "appservice,https,http,quic" {
		t.Errorf("Names() = %s", got)
	}
	// The handed-over appservice socket really accepts.
	go func() {
		if c, err := net.Dial("tcp", as.Addr().String()); err == nil {
			c.Close()
		}
	}()
	c, err := s.Appservice.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestFromFilesPartialAndNone(t *testing.T) {
	s, err := sysd.FromFiles(nil)
	if err != nil || len(s.Names()) != 0 {
		t.Fatalf("no files: %v %v", s.Names(), err)
	}
	s, err = sysd.FromFiles([]*os.File{named(t, udpConn(t), "quic")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Appservice != nil || s.HTTPS != nil || s.HTTP != nil || s.QUIC == nil {
		t.Fatalf("only quic was handed over: %v", s.Names())
	}
}

func TestFromFilesErrors(t *testing.T) {
	connected := func() *os.File {
		l := tcpListener(t)
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return named(t, c.(*net.TCPConn), "appservice")
	}
	for _, c := range []struct {
		name  string
		files func() []*os.File
		want  string
	}{
		{"unknown name", func() []*os.File { return []*os.File{named(t, tcpListener(t), "matrix")} },
			`socket named "matrix" (FileDescriptorName=); rcsgate knows only appservice, https, http, quic`},
		{"unnamed", func() []*os.File { return []*os.File{named(t, tcpListener(t), "LISTEN_FD_3")} },
			"unnamed socket (LISTEN_FD_3); set FileDescriptorName="},
		{"stream for quic", func() []*os.File { return []*os.File{named(t, tcpListener(t), "quic")} },
			`"quic" must be a datagram socket: use ListenDatagram=`},
		{"datagram for appservice", func() []*os.File { return []*os.File{named(t, udpConn(t), "appservice")} },
			`"appservice" must be a stream socket`},
		{"Accept=yes", func() []*os.File { return []*os.File{connected()} },
			"must not set Accept=yes"},
		{"duplicate", func() []*os.File {
			return []*os.File{named(t, tcpListener(t), "https"), named(t, tcpListener(t), "https")}
		}, `two sockets named "https"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A good socket first: it must be closed again when a later one fails.
			s, err := sysd.FromFiles(append([]*os.File{named(t, tcpListener(t), "http")}, c.files()...))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if len(s.Names()) != 0 {
				t.Fatalf("a failed hand-over must return nothing, got %v", s.Names())
			}
		})
	}
}
