package smsgateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
)

// JournalFile is the file in the agent's state directory that maps the
// app's message ids to the events they were sent for, so delivery reports
// find their event and a retried Send knows it may already have reached
// the app, across restarts and kill -9.
const JournalFile = "smsgateway-sent.jsonl"

// keep is how long a record stays in the journal.
const keep = 7 * 24 * time.Hour

// Journal record ops.
const (
	opIntent = "send"   // about to POST: app id, event id, chat
	opPosted = "posted" // the app has the message
	opFinal  = "final"  // a final receipt went to the sink (or we gave up)
)

type record struct {
	Op    string `json:"op"`
	App   string `json:"app"`
	Ev    string `json:"ev,omitempty"`
	Chat  string `json:"chat,omitempty"`
	T     int64  `json:"t,omitempty"` // unix ms
	State string `json:"state,omitempty"`
}

// entry is what we know of one message sent through the app.
type entry struct {
	app     string
	ev      string
	chat    string
	created time.Time
	posted  bool
	final   string // "", delivered, failed, expired, lost
	// polling
	nextPoll  time.Time
	pollDelay time.Duration
}

// journal is an append-only JSONL file, fsync'd after every record and
// compacted when opened. Not safe for concurrent use: Backend locks.
type journal struct {
	f       *os.File
	path    string
	entries map[string]*entry
}

func openJournal(stateDir string, now time.Time) (*journal, error) {
	j := &journal{path: filepath.Join(stateDir, JournalFile), entries: map[string]*entry{}}
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("smsgateway: journal: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var good int64
	lines := 0
	for sc.Scan() {
		line := sc.Bytes()
		var r record
		if json.Unmarshal(line, &r) != nil || r.App == "" {
			break // a torn last line from a crash mid-write: cut it off
		}
		good += int64(len(line)) + 1
		lines++
		j.apply(r)
	}
	f.Close()
	// Drop what is older than keep and rewrite the file when it has grown
	// well past what it holds; otherwise just cut a torn tail.
	for k, e := range j.entries {
		if now.Sub(e.created) > keep {
			delete(j.entries, k)
		}
	}
	if lines > 2*len(j.entries)+256 {
		if err := j.rewrite(); err != nil {
			return nil, err
		}
	} else if err := os.Truncate(j.path, good); err != nil {
		return nil, fmt.Errorf("smsgateway: journal: %w", err)
	}
	j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("smsgateway: journal: %w", err)
	}
	return j, nil
}

func (j *journal) apply(r record) *entry {
	e := j.entries[r.App]
	switch r.Op {
	case opIntent:
		if e == nil {
			e = &entry{app: r.App}
			j.entries[r.App] = e
		}
		e.ev, e.chat, e.created = r.Ev, r.Chat, time.UnixMilli(r.T)
	case opPosted:
		if e != nil {
			e.posted = true
		}
	case opFinal:
		if e != nil {
			e.final = r.State
		}
	}
	return e
}

// rewrite replaces the file with one holding only the live entries.
func (j *journal) rewrite() error {
	keys := make([]string, 0, len(j.entries))
	for k := range j.entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return j.entries[keys[a]].created.Before(j.entries[keys[b]].created) })
	var buf []byte
	for _, k := range keys {
		e := j.entries[k]
		for _, r := range []record{
			{Op: opIntent, App: e.app, Ev: e.ev, Chat: e.chat, T: e.created.UnixMilli()},
			{Op: opPosted, App: e.app},
			{Op: opFinal, App: e.app, State: e.final},
		} {
			if (r.Op == opPosted && !e.posted) || (r.Op == opFinal && e.final == "") {
				continue
			}
			b, _ := json.Marshal(r)
			buf = append(append(buf, b...), '\n')
		}
	}
	if err := atomicfile.Write(j.path, buf, 0o600); err != nil {
		return fmt.Errorf("smsgateway: journal: %w", err)
	}
	return syncDir(filepath.Dir(j.path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	_ = d.Sync() // not every filesystem allows it; the rename is still atomic
	return nil
}

// append writes r durably and applies it.
func (j *journal) append(r record) (*entry, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("smsgateway: journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return nil, fmt.Errorf("smsgateway: journal: %w", err)
	}
	return j.apply(r), nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
