package agent

import (
	"errors"
	"sync"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// ErrOutboxFull is returned by Add when too many messages await an ack.
var ErrOutboxFull = errors.New("agent: outbox full: too many messages wait for the server's ack")

// DefaultOutboxLimit bounds the in-memory outbox.
const DefaultOutboxLimit = 100_000

// OutboxEntry is a queued message with its position in the queue.
type OutboxEntry struct {
	Seq uint64 // strictly increasing in Add order, starting at 1
	Msg wire.Message
}

// Outbox holds every message the phone received until the server acks its
// ID. Order is Add order, which keeps per-chat order. This first version
// lives in memory; an fsync'd on-disk journal can replace it behind the same
// methods.
type Outbox struct {
	mu      sync.Mutex
	items   []OutboxEntry
	ids     map[string]struct{}
	nextSeq uint64
	limit   int
	changed chan struct{} // closed and replaced on every Add
}

// NewOutbox returns an empty outbox holding at most limit messages
// (limit <= 0 means DefaultOutboxLimit).
func NewOutbox(limit int) *Outbox {
	if limit <= 0 {
		limit = DefaultOutboxLimit
	}
	return &Outbox{ids: map[string]struct{}{}, nextSeq: 1, limit: limit, changed: make(chan struct{})}
}

// Add queues m. Adding an ID that is already queued is a no-op.
func (o *Outbox) Add(m wire.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, dup := o.ids[m.ID]; dup {
		return nil
	}
	if len(o.items) >= o.limit {
		return ErrOutboxFull
	}
	o.items = append(o.items, OutboxEntry{Seq: o.nextSeq, Msg: m})
	o.ids[m.ID] = struct{}{}
	o.nextSeq++
	close(o.changed)
	o.changed = make(chan struct{})
	return nil
}

// Ack removes the messages with these IDs and returns how many it removed;
// unknown IDs are ignored.
func (o *Outbox) Ack(ids ...string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	gone := map[string]struct{}{}
	for _, id := range ids {
		if _, ok := o.ids[id]; ok {
			gone[id] = struct{}{}
			delete(o.ids, id)
		}
	}
	if len(gone) == 0 {
		return 0
	}
	kept := o.items[:0]
	for _, e := range o.items {
		if _, ok := gone[e.Msg.ID]; !ok {
			kept = append(kept, e)
		}
	}
	clear(o.items[len(kept):])
	o.items = kept
	return len(gone)
}

// After returns the queued entries with Seq > seq, in order, and a channel
// that is closed on the next Add. A sender starts with seq 0 on each new
// connection (so everything unacked is sent again, in original order) and
// then passes the Seq of the last entry it wrote.
func (o *Outbox) After(seq uint64) ([]OutboxEntry, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []OutboxEntry
	for _, e := range o.items {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out, o.changed
}

// Len is how many messages await an ack.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items)
}
