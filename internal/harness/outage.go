package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// Outages for crash tests: a homeserver that loses transactions, a
// homeserver restart, and a power cut of the whole box.

// tap is a proxy in front of rcsgate's appservice listener that can
// swallow transactions.
type tap struct {
	srv  *http.Server
	drop atomic.Bool

	mu      sync.Mutex
	dropped map[string]bool // event ids swallowed
}

// startTap listens on tapPort, forwards to rcsgate on listenPort, and
// points the registration at itself.
func startTap(registration string, tapPort, listenPort int) (*tap, error) {
	raw, err := os.ReadFile(registration)
	if err != nil {
		return nil, fmt.Errorf("harness: tap: %w", err)
	}
	var reg map[string]any
	if err := yaml.Unmarshal(raw, &reg); err != nil {
		return nil, fmt.Errorf("harness: tap: %w", err)
	}
	reg["url"] = fmt.Sprintf("http://127.0.0.1:%d", tapPort)
	out, err := yaml.Marshal(reg)
	if err != nil {
		return nil, fmt.Errorf("harness: tap: %w", err)
	}
	if err := os.WriteFile(registration, out, 0o600); err != nil {
		return nil, fmt.Errorf("harness: tap: %w", err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tapPort))
	if err != nil {
		return nil, fmt.Errorf("harness: tap: %w", err)
	}
	t := &tap{dropped: map[string]bool{}}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", listenPort)})
	t.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/transactions/") && t.drop.Load() {
			var txn struct {
				Events []struct {
					EventID string `json:"event_id"`
				} `json:"events"`
			}
			_ = json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&txn)
			t.mu.Lock()
			for _, e := range txn.Events {
				t.dropped[e.EventID] = true
			}
			t.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("{}"))
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = t.srv.Serve(l) }()
	return t, nil
}

func (t *tap) close() {
	if t != nil {
		_ = t.srv.Close()
	}
}

// DropTransactions makes the tap (Options.TransactionTap) swallow every
// appservice transaction from now on (true) or pass them on again (false).
func (st *Stack) DropTransactions(on bool) error {
	if st.tap == nil {
		return errors.New("harness: DropTransactions needs Options.TransactionTap")
	}
	st.tap.drop.Store(on)
	return nil
}

// Dropped reports whether the tap swallowed a transaction with this event.
func (st *Stack) Dropped(eventID id.EventID) bool {
	if st.tap == nil {
		return false
	}
	st.tap.mu.Lock()
	defer st.tap.mu.Unlock()
	return st.tap.dropped[string(eventID)]
}

// KillHomeserver SIGKILLs the homeserver.
func (st *Stack) KillHomeserver() error { return st.HS.Kill() }

// StartHomeserver starts the homeserver again on its data and port.
func (st *Stack) StartHomeserver(ctx context.Context) error {
	hs, err := testpeer.Start(ctx, st.Opts.Homeserver, st.hsOpts)
	if err != nil {
		return err
	}
	st.HS = hs
	return nil
}

// PowerCut SIGKILLs the homeserver, rcsgate and the agent at the same
// moment, as when the box loses power (what the kernel had accepted into
// its page cache survives here, which a real power cut may not keep
// unless it was fsync'd — every component fsyncs what it acknowledges).
func (st *Stack) PowerCut() error {
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, p := range []*proc{st.gw, st.agent} {
		if p != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			wg.Go(func() { errs[i] = p.stop(syscall.SIGKILL) })
		}
	}
	wg.Go(func() { errs[2] = st.HS.Kill() })
	wg.Wait()
	return errors.Join(errs...)
}
