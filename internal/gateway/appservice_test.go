package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serveTest serves a handler that counts what reaches it behind the
// appservice listener's limits.
func serveTest(t *testing.T, lim appserviceLimits) (addr string, reached *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reached = &atomic.Int32{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})
	srv, capped := newAppserviceServer(ln, h, "hs-token-0123456789", lim)
	go func() { _ = srv.Serve(capped) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), reached
}

func readStatus(t *testing.T, c net.Conn, within time.Duration) (int, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestUnauthenticatedBodyNotAwaited: a request without the homeserver's
// token gets 401 without the server waiting for the body it announced,
// and its connection is closed.
func TestUnauthenticatedBodyNotAwaited(t *testing.T) {
	addr, reached := serveTest(t, defaultAppserviceLimits)
	for _, auth := range []string{"", "Authorization: Bearer wrong\r\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// 200 kB announced (under net/http's 256 KiB discard threshold), none sent.
		fmt.Fprintf(c, "PUT /_matrix/app/v1/transactions/1 HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n", auth)
		code, err := readStatus(t, c, 5*time.Second)
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("auth %q: got %d, %v; want 401 without sending the body", auth, code, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection left open after the 401: %v", err)
		}
		c.Close()
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d unauthenticated requests reached the handler", n)
	}
	// With the token it goes through.
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/2", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer hs-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("authenticated request: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestSlowHeadersAndIdleClosed: a client that sends half a request, or
// nothing, is cut off by the header timeout.
func TestSlowHeadersAndIdleClosed(t *testing.T) {
	lim := defaultAppserviceLimits
	lim.ReadHeaderTimeout, lim.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	addr, _ := serveTest(t, lim)
	for _, partial := range []string{"", "PUT /_matrix/app/v1/transactions/1 HTTP/1.1\r\nHost: x\r\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, partial)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("partial request %q: the server kept the connection", partial)
		}
		c.Close()
	}
}

// TestAppserviceConnectionCap: past MaxConns, connections wait in the
// backlog unanswered until one of the held ones closes.
func TestAppserviceConnectionCap(t *testing.T) {
	lim := defaultAppserviceLimits
	lim.MaxConns = 3
	addr, reached := serveTest(t, lim)
	var held []net.Conn
	for range lim.MaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Make sure the server accepted the held ones (an authenticated
	// request each, answered, connection kept alive).
	for _, c := range held {
		fmt.Fprint(c, "GET /_matrix/mau/live HTTP/1.1\r\nHost: x\r\n\r\n")
		if code, err := readStatus(t, c, 5*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("held connection: %d %v", code, err)
		}
	}
	extra, err := net.Dial("tcp", addr) // completes in the kernel's backlog
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	fmt.Fprint(extra, "GET /_matrix/mau/live HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := readStatus(t, extra, 300*time.Millisecond); err == nil {
		t.Fatal("a connection past the cap was served")
	}
	before := reached.Load()
	held[0].Close()
	if code, err := readStatus(t, extra, 5*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("waiting connection not served once a place was free: %d %v", code, err)
	}
	if reached.Load() != before+1 {
		t.Fatal("the waiting request did not reach the handler")
	}
	for _, c := range held[1:] {
		c.Close()
	}
}
