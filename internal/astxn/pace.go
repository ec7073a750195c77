package astxn

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
)

// The bridge bot long-polls /sync in up to three loops (mautrix's crypto
// syncer for to-device messages; SyncEphemeral on homeservers that do not
// push typing and receipts; catch-up's watch on the homeserver), and it sits
// in every portal, so the homeserver answers each poll at every event in
// any portal, each answer a sync computation on the message's path; the
// filters then drop nearly all of it. PaceSyncs makes each loop start a
// long-poll at most once per SyncEvery: an event stream of any rate costs a
// few syncs a second, and a typing notice, a receipt or a room key arrives
// at most SyncEvery later. Messages do not come this way (the homeserver
// pushes them). A sync that does not long-poll (timeout 0: catch-up's
// passes, a loop's first sync) is never held: the homeserver answers it at
// once, woken by nothing, and a pass must not wait behind the last one.

// SyncEvery is the shortest time between two long-polls of one loop.
const SyncEvery = 250 * time.Millisecond

// PaceSyncs wraps cli's transport so its /sync long-polls are paced per loop
// (a loop: one access token, user and filter).
func PaceSyncs(cli *http.Client, every time.Duration) {
	next := cli.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	cli.Transport = &syncPacer{next: next, every: every, last: map[string]time.Time{}}
}

type syncPacer struct {
	next  http.RoundTripper
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time // loop → when its latest sync may start or started
}

func (p *syncPacer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/sync") {
		q := req.URL.Query()
		if timeout, _ := strconv.Atoi(q.Get("timeout")); timeout <= 0 {
			return p.next.RoundTrip(req)
		}
		loop := req.Header.Get("Authorization") + "\x00" + q.Get("user_id") + "\x00" + q.Get("filter")
		now := time.Now()
		p.mu.Lock()
		start := p.last[loop].Add(p.every)
		if start.Before(now) {
			start = now
		}
		p.last[loop] = start
		p.mu.Unlock()
		if wait := start.Sub(now); wait > 0 && !ctxutil.Sleep(req.Context(), wait) {
			return nil, req.Context().Err()
		}
	}
	return p.next.RoundTrip(req)
}
