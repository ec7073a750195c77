package agent

import "sync"

// DefaultSeenLimit is how many handled server message ids the agent remembers.
const DefaultSeenLimit = 10_000

// outcome is what happened to a server message handed to the backend.
type outcome struct {
	State  string // wire.StateSent or wire.StateFailed
	Reason string
	TSMS   int64
}

// seenSet remembers the outcome of the last N handled server messages, so a
// duplicate (same ID, e.g. re-sent after a reconnect) is acked again and its
// status repeated, but never sent to the phone twice. Oldest ids fall out
// first.
type seenSet struct {
	mu    sync.Mutex
	limit int
	m     map[string]outcome
	ring  []string // insertion order; len <= limit
	next  int      // where the next id goes once the ring is full
}

func newSeenSet(limit int) *seenSet {
	if limit <= 0 {
		limit = DefaultSeenLimit
	}
	return &seenSet{limit: limit, m: map[string]outcome{}}
}

func (s *seenSet) get(id string) (outcome, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.m[id]
	return o, ok
}

func (s *seenSet) add(id string, o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[id]; ok {
		s.m[id] = o
		return
	}
	if len(s.ring) < s.limit {
		s.ring = append(s.ring, id)
	} else {
		delete(s.m, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % s.limit
	}
	s.m[id] = o
}
