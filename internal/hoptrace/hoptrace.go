// Package hoptrace marks the moment a message passes each hop between
// Matrix and the phone, so `make bench` can show where a round trip's time
// goes. It is off (one nil check per mark) unless the environment variable
// RCSGATE_HOPTRACE names a directory; then each process appends lines
// "<unix ns> <hop> <key>" to a file of its own there. Keys are message ids
// (Matrix event ids, phone message ids): never bodies, numbers or tokens.
// It imports nothing but the standard library, so the agent may use it.
package hoptrace

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvVar names the directory traces go to.
const EnvVar = "RCSGATE_HOPTRACE"

// Hops, in the order a benchmark round trip passes them. Matrix → phone
// marks are keyed by the Matrix event id, phone → Matrix marks by the
// phone's message id.
const (
	Pushed      = "as.pushed"       // the homeserver's transaction carrying the event reached the bridge
	Queued      = "out.queued"      // committed to the device's outbox
	Answered    = "as.answered"     // the transaction was answered (every event in it handled)
	OnStream    = "out.stream"      // written to the device's QUIC stream
	AgentStored = "agent.stored"    // journaled (fsync'd) by the agent
	Handed      = "agent.handed"    // the phone took it
	StatusIn    = "status.in"       // the bridge got the phone's status
	Delivered   = "agent.delivered" // a phone message journaled by the agent
	InRecv      = "in.recv"         // the bridge read the phone message from the stream
	InSend      = "in.send"         // the bridge starts sending the ghost's event
	InMatrix    = "in.matrix"       // the homeserver accepted the ghost's event
	InAcked     = "in.acked"        // the bridge acked the phone message
	// Files: phone → Matrix keyed by the phone's id, Matrix → phone by the
	// event id.
	MediaUpStart   = "media.up.start"   // the bridge starts pulling a phone file
	MediaUpDone    = "media.up.done"    // the homeserver has the whole file
	MediaDownStart = "media.down.start" // the agent starts pulling a Matrix file
	MediaDownDone  = "media.down.done"  // the agent has it on disk (fsync'd)
	// StatusPrefix + a Matrix send status ("pending", "success", "fail"):
	// the bridge's status event was accepted by the homeserver.
	StatusPrefix = "mss."
)

var (
	mu  sync.Mutex
	out *os.File
)

func init() {
	dir := os.Getenv(EnvVar)
	if dir == "" {
		return
	}
	name := fmt.Sprintf("%s-%d.trace", filepath.Base(os.Args[0]), os.Getpid())
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hoptrace: %v (tracing off)\n", err)
		return
	}
	out = f
}

// On reports whether marks are recorded.
func On() bool { return out != nil }

// Mark records that key passed hop now.
func Mark(hop, key string) {
	if out == nil || key == "" {
		return
	}
	now := time.Now().UnixNano()
	line := strconv.FormatInt(now, 10) + " " + hop + " " + strings.Map(noSpace, key) + "\n"
	mu.Lock()
	_, _ = out.WriteString(line) // a trace is best effort
	mu.Unlock()
}

func noSpace(r rune) rune {
	if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
		return '_'
	}
	return r
}

// Trace is every mark read back: hop → key → when (the first mark wins).
type Trace map[string]map[string]time.Time

// At returns when key passed hop.
func (t Trace) At(hop, key string) (time.Time, bool) {
	at, ok := t[hop][key]
	return at, ok
}

// Read loads every trace file in dir.
func Read(dir string) (Trace, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.trace"))
	if err != nil {
		return nil, err
	}
	t := Trace{}
	for _, p := range paths {
		if err := t.readFile(p); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t Trace) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ns, rest, ok := strings.Cut(sc.Text(), " ")
		hop, key, ok2 := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(ns, 10, 64)
		if !ok || !ok2 || err != nil {
			continue // a line torn by a kill
		}
		m := t[hop]
		if m == nil {
			m = map[string]time.Time{}
			t[hop] = m
		}
		if _, seen := m[key]; !seen {
			m[key] = time.Unix(0, n)
		}
	}
	return sc.Err()
}
