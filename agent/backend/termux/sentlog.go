package termux

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
)

// Send states in the sent log. A send is recorded as attempting (fsync'd)
// before termux-sms-send runs and as sent or not sent after it ends; an id
// whose last record is attempting was cut off mid-send (crash, power loss,
// timeout) and its fate is unknown. See docs/backends/termux.md.
const (
	stAttempt = "attempt"
	stSent    = "sent"
	stNotSent = "notsent"
)

// SentFile is the durable record of sends in the state directory.
const SentFile = "termux-sent.jsonl"

// keepSent is how many ids the log keeps when it is compacted at open; the
// agent never retries an event that old.
const keepSent = 10000

type sentRec struct {
	ID string `json:"id"`
	St string `json:"st"`
	TS int64  `json:"ts"` // unix seconds
}

// sentLog is an append-only, fsync'd JSONL file of send states; the last
// record of an id wins. Not safe for concurrent use (Send serialises).
type sentLog struct {
	path  string
	f     *os.File
	state map[string]string
	order []string // ids in order of first record, for compaction
}

func openSentLog(path string) (*sentLog, error) {
	l := &sentLog{path: path, state: map[string]string{}}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("termux: open sent log: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var good int64
	lines := 0
	for sc.Scan() {
		line := sc.Bytes()
		var r sentRec
		if err := json.Unmarshal(line, &r); err != nil || r.ID == "" {
			break // a torn last line from a crash mid-write: cut it off
		}
		good += int64(len(line)) + 1
		lines++
		if _, ok := l.state[r.ID]; !ok {
			l.order = append(l.order, r.ID)
		}
		l.state[r.ID] = r.St
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("termux: repair sent log: %w", err)
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("termux: repair sent log: %w", err)
	}
	l.f = f
	if lines > 2*keepSent || len(l.order) > keepSent {
		if err := l.compact(); err != nil {
			l.f.Close()
			return nil, err
		}
	}
	return l, nil
}

// compact rewrites the log with the last state of the newest keepSent ids.
func (l *sentLog) compact() error {
	if len(l.order) > keepSent {
		for _, id := range l.order[:len(l.order)-keepSent] {
			delete(l.state, id)
		}
		l.order = append([]string(nil), l.order[len(l.order)-keepSent:]...)
	}
	var buf []byte
	now := time.Now().Unix()
	for _, id := range l.order {
		b, err := json.Marshal(sentRec{ID: id, St: l.state[id], TS: now})
		if err != nil {
			return fmt.Errorf("termux: compact sent log: %w", err)
		}
		buf = append(append(buf, b...), '\n')
	}
	if err := atomicfile.Write(l.path, buf, 0o600); err != nil {
		return fmt.Errorf("termux: compact sent log: %w", err)
	}
	l.f.Close()
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("termux: reopen sent log: %w", err)
	}
	l.f = f
	return nil
}

func (l *sentLog) get(id string) string { return l.state[id] }

// put records st for id durably (written and fsync'd) before returning;
// the in-memory state is updated even when the write fails.
func (l *sentLog) put(id, st string) error {
	if _, ok := l.state[id]; !ok {
		l.order = append(l.order, id)
	}
	l.state[id] = st
	b, err := json.Marshal(sentRec{ID: id, St: st, TS: time.Now().Unix()})
	if err != nil {
		return fmt.Errorf("termux: record send: %w", err)
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("termux: record send: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("termux: record send: %w", err)
	}
	return nil
}

func (l *sentLog) close() error { return l.f.Close() }

// CursorFile holds the highest inbox _id delivered to the agent.
const CursorFile = "termux-cursor.json"

type cursor struct {
	// LastID is the highest _id the agent has taken (Deliver returned nil)
	// or that was skipped on purpose; rows with a higher _id are new.
	LastID int64 `json:"last_id"`
	// BackfillUntil: rows up to it existed before the first start and are
	// delivered with Backfill set.
	BackfillUntil int64 `json:"backfill_until"`
}

// loadCursor returns the cursor and whether one was stored.
func loadCursor(path string) (cursor, bool, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return cursor{}, false, nil
	}
	if err != nil {
		return cursor{}, false, fmt.Errorf("termux: read cursor: %w", err)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return cursor{}, false, fmt.Errorf("termux: cursor %s is corrupt (delete it to start from the newest SMS): %w", path, err)
	}
	return c, true, nil
}

func saveCursor(path string, c cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("termux: save cursor: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("termux: save cursor: %w", err)
	}
	return nil
}
