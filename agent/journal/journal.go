// Package journal is the agent's durable outbox and inbox: an append-only,
// fsync'd, checksummed log in the state directory, in pure Go (the agent
// cross-builds for Android with CGO_ENABLED=0, so no SQLite).
//
// Both directions of the device channel live in it:
//
//   - phone → server: a message the phone received is queued (out_queued)
//     before the backend is told it is safe, sent after every (re)connect in
//     order with the same id, and dropped from the queue when the server acks
//     it (out_acked).
//   - server → phone: a message from the server is written (in_received)
//     before the agent acks it, handed to the phone from the journal in order,
//     its outcome written (in_handed) and its status kept until the server
//     acks the status (status_acked).
//
// Every append is one record (length, CRC-32C, JSON entries) written and
// fsync'd before the call returns. On open a torn tail record is cut off; a
// bad record with good ones after it is an error naming the file and offset.
// When finished entries dominate, the live state is rewritten to a new
// segment (compaction), so the file does not grow for ever; and when a
// finished message's text has been in the file for BodyMaxAge, so delivered
// text does not linger on the phone's disk. Ids of finished messages are
// kept for a retention window (count and age) so a message seen again is
// recognised after a restart too.
package journal

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// Defaults for Options left zero.
const (
	DefaultMaxPending = 10_000
	DefaultRetain     = 10_000
	DefaultRetainAge  = 7 * 24 * time.Hour
	DefaultCompactMin = 4096
	// DefaultBodyMaxAge: a delivered message's text leaves the journal
	// file within this long (a compaction rewrites the file without it).
	DefaultBodyMaxAge = 30 * time.Second
	// compactPayload is the target size of one record written by compaction.
	compactPayload = 1 << 20
)

// Dir is the journal's directory inside the agent's state directory.
const Dir = "journal"

// Errors callers tell apart with errors.Is.
var (
	// ErrFull: too many messages wait; the caller keeps this one (the phone
	// backend keeps it on the phone; the server keeps it in its outbox).
	ErrFull = errors.New("journal: full")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("journal: closed")
	// errBroken: a write or fsync failed so what is on disk is unknown; the
	// journal refuses further writes until it is opened again.
	errBroken = errors.New("journal: unusable after a failed write (restart the agent)")
)

// Options configure Open.
type Options struct {
	MaxOut int // phone→server messages awaiting the server's ack; 0 means DefaultMaxPending
	// MaxIn bounds server→phone messages not yet finished: received but not
	// handed to the phone, or handed with the status not yet acked. 0 means
	// DefaultMaxPending.
	MaxIn int
	// Retain and RetainAge bound how many finished message ids (each way)
	// are remembered, and for how long, to recognise a message sent again.
	Retain    int
	RetainAge time.Duration
	// CompactMin is the least number of entries in the live segment before
	// compaction is considered; it runs when fewer than half are live.
	CompactMin int
	// BodyMaxAge: compaction also runs once the text of a finished message
	// (acked by the server, or handed to the phone) has been in the live
	// segment this long, so delivered text does not stay on disk. 0 means
	// DefaultBodyMaxAge.
	BodyMaxAge time.Duration
	// NoSync skips fsync. Only for measuring what fsync costs; never in the agent.
	NoSync bool
	Now    func() time.Time
}

// OutEntry is a phone→server message awaiting the server's ack.
type OutEntry struct {
	Seq uint64 // increasing in queue order; meaningful within this process only
	Msg wire.Message
}

// InEntry is a server→phone message not yet handed to the phone.
type InEntry struct {
	Seq uint64
	Msg wire.Message
}

// StatusEntry is a status not yet acked by the server.
type StatusEntry struct {
	Seq    uint64
	Status wire.Status
}

// InResult is what ReceiveIn did with one message.
type InResult int

const (
	InNew     InResult = iota // stored now
	InPending                 // already stored, not yet handed to the phone
	InHanded                  // already handed to the phone; status not yet acked
	InDone                    // already handed and its status acked (or remembered from the retention window)
	InFull                    // not stored: too many messages pending (ErrFull)
	InInvalid                 // not stored: id, chat or sender is not valid UTF-8
)

func (r InResult) String() string {
	return [...]string{"new", "pending", "handed", "done", "full", "invalid"}[r]
}

// Depth is how much waits in each direction.
type Depth struct {
	Out    int // phone→server messages the server has not acked
	In     int // server→phone messages not yet handed to the phone
	Status int // statuses the server has not acked
}

// Stats describe the file, for tests and logs.
type Stats struct {
	Segment     string // live segment file name
	Entries     int    // entries in the live segment
	Live        int    // entries compaction would keep
	Compactions int
	TornBytes   int // bytes cut off a torn tail when opened
	CompactErr  error
}

type inState uint8

const (
	stReceived inState = iota + 1
	stHanded
	stDone
)

type outItem struct {
	seq  uint64
	msg  wire.Message
	at   int64
	done bool
}

type inItem struct {
	id     string
	seq    uint64 // receipt order
	sseq   uint64 // status order
	state  inState
	msg    wire.Message // kept only until handed
	at     int64        // received, handed or finished: time of the last transition
	status wire.Status
}

type doneRef struct {
	id string
	at int64
}

// Journal is safe for concurrent use. Appends are serialised (wmu) and
// fsync'd; readers (OutAfter, NextHandover, Depth...) only take mu, so a
// slow fsync never blocks them.
type Journal struct {
	dir  string
	opts Options

	wmu         sync.Mutex // serialises writers: file appends and compaction
	seg         *segment
	broken      error
	closed      bool
	compactions int
	compactErr  error
	compactSkip int // appends to wait before trying a failed compaction again
	tornBytes   int
	ageTimer    *time.Timer // compacts once the oldest dead text is BodyMaxAge old

	mu       sync.Mutex // guards everything below
	seq      uint64
	entries  int // entries in the live segment
	outPend  map[string]*outItem
	outQ     []*outItem // queue order; acked ones are marked done and trimmed from the front
	outHead  int
	outDone  map[string]int64 // retained acked ids → when acked
	outFIFO  []doneRef
	outFHead int
	in       map[string]*inItem // every known server message id
	inPend   int                // received + handed (not done)
	recvPend int                // received, not yet handed
	recvQ    []*inItem          // received, in order; trimmed from the front once handed
	recvHead int
	lanes    map[string]*lane // received, not yet handed, per chat, in order
	statQ    []*inItem        // handed, in status order; trimmed once done
	statHead int
	inFIFO   []*inItem // done, in the order they finished
	inFHead  int
	changed  chan struct{}

	// deadSince is when the first message whose text is still in the live
	// segment was finished (unix ms; 0: none since the last compaction).
	deadSince int64
}

// Open opens (or creates) the journal in dir/journal and rebuilds the index
// from it. A torn tail is truncated; corruption elsewhere is an error that
// names the file and offset (errors.Is(err, ErrCorrupt)).
func Open(stateDir string, opts Options) (*Journal, error) {
	if opts.MaxOut <= 0 {
		opts.MaxOut = DefaultMaxPending
	}
	if opts.MaxIn <= 0 {
		opts.MaxIn = DefaultMaxPending
	}
	if opts.Retain <= 0 {
		opts.Retain = DefaultRetain
	}
	if opts.RetainAge <= 0 {
		opts.RetainAge = DefaultRetainAge
	}
	if opts.CompactMin <= 0 {
		opts.CompactMin = DefaultCompactMin
	}
	if opts.BodyMaxAge <= 0 {
		opts.BodyMaxAge = DefaultBodyMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dir := filepath.Join(stateDir, Dir)
	seg, entries, info, err := openSegment(dir, opts.NoSync)
	if err != nil {
		return nil, err
	}
	j := &Journal{
		dir: dir, opts: opts, seg: seg, tornBytes: info.TornBytes,
		outPend: map[string]*outItem{}, outDone: map[string]int64{}, in: map[string]*inItem{},
		lanes: map[string]*lane{}, changed: make(chan struct{}),
	}
	for i := range entries {
		j.apply(&entries[i])
	}
	j.entries = len(entries)
	// Text finished before a stop may have waited long enough already.
	j.wmu.Lock()
	j.maybeCompact()
	j.wmu.Unlock()
	return j, nil
}

// Close closes the file. The index stays readable (Depth, OutAfter...);
// writes return ErrClosed.
func (j *Journal) Close() error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	if j.ageTimer != nil {
		j.ageTimer.Stop()
	}
	return j.seg.close()
}

// Changed returns a channel closed at the next change: a message queued
// either way, a message handed to the phone (a status to send), an ack.
func (j *Journal) Changed() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.changed
}

func (j *Journal) nowMS() int64 { return j.opts.Now().UnixMilli() }

// QueueOut stores a message from the phone for the server. It returns false
// (and no error) when the id is already queued or was acked within the
// retention window: the phone handed the same message twice. It returns
// ErrFull when MaxOut messages await the server's ack.
func (j *Journal) QueueOut(m wire.Message) (added bool, err error) {
	if err := m.Validate(); err != nil {
		return false, fmt.Errorf("journal: %w", err)
	}
	if !validStrings(m) {
		return false, errors.New("journal: message id, chat or sender is not UTF-8")
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	_, pending := j.outPend[m.ID]
	_, done := j.outDone[m.ID]
	n := len(j.outPend)
	j.mu.Unlock()
	if pending || done {
		return false, nil
	}
	if n >= j.opts.MaxOut {
		return false, fmt.Errorf("%w: %d messages from the phone wait for the server's ack (limit %d)", ErrFull, n, j.opts.MaxOut)
	}
	msg := m
	return true, j.write([]Entry{{Kind: KindOutQueued, Msg: &msg, AtMS: j.nowMS()}})
}

// AckOut records the server's ack of these phone messages and returns how
// many were pending; unknown or already acked ids are ignored.
func (j *Journal) AckOut(ids ...string) (int, error) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	now := j.nowMS()
	var es []Entry
	seen := map[string]bool{}
	j.mu.Lock()
	for _, id := range ids {
		if _, ok := j.outPend[id]; ok && !seen[id] {
			seen[id] = true
			es = append(es, Entry{Kind: KindOutAcked, ID: id, AtMS: now})
		}
	}
	j.mu.Unlock()
	if len(es) == 0 {
		return 0, nil
	}
	return len(es), j.write(es)
}

// OutAfter returns up to max queued phone messages with Seq > seq, oldest
// first (max <= 0: all). A sender starts from 0 on each connection, so every
// unacked message goes out again in the original order.
func (j *Journal) OutAfter(seq uint64, max int) []OutEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	q := j.outQ[j.outHead:]
	i := sort.Search(len(q), func(i int) bool { return q[i].seq > seq })
	var out []OutEntry
	for _, it := range q[i:] {
		if it.done {
			continue
		}
		out = append(out, OutEntry{Seq: it.seq, Msg: it.msg})
		if max > 0 && len(out) == max {
			break
		}
	}
	return out
}

// ReceiveIn stores messages from the server, in order, with one fsync, and
// says per message what it did. Messages with InNew, InPending, InHanded or
// InDone are durably held and may be acked to the server; InFull and
// InInvalid ones are not stored. A message id seen before (pending, handed,
// or finished within the retention window) is not stored again.
func (j *Journal) ReceiveIn(msgs []wire.Message) ([]InResult, error) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	res := make([]InResult, len(msgs))
	var es []Entry
	batch := map[string]bool{}
	now := j.nowMS()
	j.mu.Lock()
	pend := j.inPend
	for i, m := range msgs {
		if it, ok := j.in[m.ID]; ok {
			res[i] = map[inState]InResult{stReceived: InPending, stHanded: InHanded, stDone: InDone}[it.state]
			continue
		}
		switch {
		case batch[m.ID]:
			res[i] = InPending
		case m.Validate() != nil || !validStrings(m):
			res[i] = InInvalid
		case pend >= j.opts.MaxIn:
			res[i] = InFull
		default:
			msg := m
			es = append(es, Entry{Kind: KindInReceived, Msg: &msg, AtMS: now})
			batch[m.ID] = true
			pend++
			res[i] = InNew
		}
	}
	j.mu.Unlock()
	if len(es) == 0 {
		return res, nil
	}
	if err := j.write(es); err != nil {
		return nil, err
	}
	return res, nil
}

// HandoverHeads returns, for every chat with server messages not yet handed
// to the phone, the oldest of them, skipping chats for which skip says so
// (nil: none); oldest first. Handing each chat's messages in its own order,
// and chats independently, keeps a chat the phone cannot send to from
// holding up the others.
func (j *Journal) HandoverHeads(skip func(chat string) bool) []InEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	heads := make([]InEntry, 0, len(j.lanes))
	for chat, l := range j.lanes {
		if skip != nil && skip(chat) {
			continue
		}
		it := l.q[l.head]
		heads = append(heads, InEntry{Seq: it.seq, Msg: it.msg})
	}
	sort.Slice(heads, func(a, b int) bool { return heads[a].Seq < heads[b].Seq })
	return heads
}

// NextHandover returns the oldest server message not yet handed to the phone.
func (j *Journal) NextHandover() (InEntry, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, it := range j.recvQ[j.recvHead:] {
		if it.state == stReceived {
			return InEntry{Seq: it.seq, Msg: it.msg}, true
		}
	}
	return InEntry{}, false
}

// Handed records what happened when the message was handed to the phone;
// its status is then pending until AckStatus. It is a no-op for a message
// not waiting to be handed.
func (j *Journal) Handed(st wire.Status) error {
	if err := st.Validate(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	it, ok := j.in[st.ID]
	waiting := ok && it.state == stReceived
	j.mu.Unlock()
	if !waiting {
		return nil
	}
	return j.write([]Entry{{Kind: KindInHanded, ID: st.ID, State: st.State, Reason: st.Reason, TSMS: st.TSMS, AtMS: j.nowMS()}})
}

// StatusAfter returns up to max statuses not yet acked by the server with
// Seq > seq, in the order the messages were handed to the phone.
func (j *Journal) StatusAfter(seq uint64, max int) []StatusEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	q := j.statQ[j.statHead:]
	i := sort.Search(len(q), func(i int) bool { return q[i].sseq > seq })
	var out []StatusEntry
	for _, it := range q[i:] {
		if it.state != stHanded {
			continue
		}
		out = append(out, StatusEntry{Seq: it.sseq, Status: it.status})
		if max > 0 && len(out) == max {
			break
		}
	}
	return out
}

// AckStatus records that the server has these statuses; a reference whose
// state differs from the pending status, or whose message is not pending,
// is ignored. It returns how many it recorded.
func (j *Journal) AckStatus(refs ...wire.StatusRef) (int, error) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	now := j.nowMS()
	var es []Entry
	seen := map[string]bool{}
	j.mu.Lock()
	for _, r := range refs {
		if it, ok := j.in[r.ID]; ok && it.state == stHanded && it.status.State == r.State && !seen[r.ID] {
			seen[r.ID] = true
			es = append(es, Entry{Kind: KindStatusAcked, ID: r.ID, State: r.State, AtMS: now})
		}
	}
	j.mu.Unlock()
	if len(es) == 0 {
		return 0, nil
	}
	return len(es), j.write(es)
}

// LookupOut reports whether a phone message id is known: queued for the
// server (done false) or acked by it and still remembered (done true).
func (j *Journal) LookupOut(id string) (pending, done, known bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.outPend[id]; ok {
		return true, false, true
	}
	if _, ok := j.outDone[id]; ok {
		return false, true, true
	}
	return false, false, false
}

// PendingOut returns a phone message still waiting for the server's ack.
func (j *Journal) PendingOut(id string) (wire.Message, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if it, ok := j.outPend[id]; ok {
		return it.msg, true
	}
	return wire.Message{}, false
}

// LookupIn returns the status of a server message that was handed to the
// phone (pending or finished), if the journal still knows it.
func (j *Journal) LookupIn(id string) (wire.Status, InResult, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	it, ok := j.in[id]
	if !ok {
		return wire.Status{}, 0, false
	}
	switch it.state {
	case stReceived:
		return wire.Status{}, InPending, true
	case stHanded:
		return it.status, InHanded, true
	default:
		return it.status, InDone, true
	}
}

// Depth reports what waits each way.
func (j *Journal) Depth() Depth {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Depth{Out: len(j.outPend), In: j.recvPend, Status: j.inPend - j.recvPend}
}

// Stats describes the live segment.
func (j *Journal) Stats() Stats {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	return Stats{Segment: segmentName(j.seg.num), Entries: j.entries, Live: j.liveLocked(),
		Compactions: j.compactions, TornBytes: j.tornBytes, CompactErr: j.compactErr}
}

func validStrings(m wire.Message) bool {
	return utf8.ValidString(m.ID) && utf8.ValidString(m.Chat) && utf8.ValidString(m.From)
}

// write appends es as one record (or a few, if large), fsyncs, then applies
// them to the index. Called with wmu held.
func (j *Journal) write(es []Entry) error {
	if j.closed {
		return ErrClosed
	}
	if j.broken != nil {
		return j.broken
	}
	payloads, err := encodeEntries(es, MaxRecord)
	if err != nil {
		return err
	}
	if err := j.seg.append(payloads); err != nil {
		if errors.Is(err, errBroken) {
			j.broken = err
		}
		return err
	}
	j.mu.Lock()
	for i := range es {
		j.apply(&es[i])
	}
	j.entries += len(es)
	close(j.changed)
	j.changed = make(chan struct{})
	j.mu.Unlock()
	j.maybeCompact()
	return nil
}

// apply changes the index for one entry. It is used both when replaying the
// file and after a write, so the two can never disagree. Called with mu held.
func (j *Journal) apply(e *Entry) {
	id := e.key()
	switch e.Kind {
	case KindOutQueued:
		if _, ok := j.outPend[id]; ok {
			return
		}
		if _, ok := j.outDone[id]; ok {
			return
		}
		j.seq++
		it := &outItem{seq: j.seq, msg: *e.Msg, at: e.AtMS}
		j.outPend[id] = it
		j.outQ = append(j.outQ, it)
	case KindOutAcked:
		it, ok := j.outPend[id]
		if !ok {
			return
		}
		it.done = true
		delete(j.outPend, id)
		j.textDied(e.AtMS)
		for j.outHead < len(j.outQ) && j.outQ[j.outHead].done {
			j.outQ[j.outHead] = nil
			j.outHead++
		}
		j.outQ, j.outHead = reclaim(j.outQ, j.outHead)
		j.retainOut(id, e.AtMS)
	case KindOutSeen:
		if _, ok := j.outPend[id]; !ok {
			j.retainOut(id, e.AtMS)
		}
	case KindInReceived:
		if _, ok := j.in[id]; ok {
			return
		}
		j.seq++
		it := &inItem{id: id, seq: j.seq, state: stReceived, msg: *e.Msg, at: e.AtMS}
		j.in[id] = it
		j.recvQ = append(j.recvQ, it)
		j.inPend++
		j.recvPend++
		l := j.lanes[it.msg.Chat]
		if l == nil {
			l = &lane{}
			j.lanes[it.msg.Chat] = l
		}
		l.q = append(l.q, it)
	case KindInHanded:
		it, ok := j.in[id]
		if !ok { // compacted form: handed, status pending, message body gone
			it = &inItem{id: id}
			j.in[id] = it
			j.inPend++
		} else if it.state != stReceived {
			return
		} else {
			j.recvPend--
			j.textDied(e.AtMS)
			j.leaveLane(it)
		}
		j.seq++
		it.state, it.sseq, it.at, it.msg = stHanded, j.seq, e.AtMS, wire.Message{}
		it.status = wire.Status{ID: id, State: e.State, Reason: e.Reason, TSMS: e.TSMS}
		j.statQ = append(j.statQ, it)
		for j.recvHead < len(j.recvQ) && j.recvQ[j.recvHead].state != stReceived {
			j.recvQ[j.recvHead] = nil
			j.recvHead++
		}
		j.recvQ, j.recvHead = reclaim(j.recvQ, j.recvHead)
	case KindStatusAcked:
		it, ok := j.in[id]
		if !ok || it.state != stHanded {
			return
		}
		it.state, it.at = stDone, e.AtMS
		j.inPend--
		for j.statHead < len(j.statQ) && j.statQ[j.statHead].state != stHanded {
			j.statQ[j.statHead] = nil
			j.statHead++
		}
		j.statQ, j.statHead = reclaim(j.statQ, j.statHead)
		j.retainIn(it)
	case KindInSeen:
		if _, ok := j.in[id]; ok {
			return
		}
		it := &inItem{id: id, state: stDone, at: e.AtMS,
			status: wire.Status{ID: id, State: e.State, Reason: e.Reason, TSMS: e.TSMS}}
		j.in[id] = it
		j.retainIn(it)
	}
}

// textDied notes that a message whose text is in the live segment is
// finished. Called with mu held.
func (j *Journal) textDied(at int64) {
	if j.deadSince == 0 || at < j.deadSince {
		j.deadSince = max(at, 1)
	}
}

// lane is one chat's received messages not yet handed, in order.
type lane struct {
	q    []*inItem
	head int
}

// leaveLane takes a handed message out of its chat's lane (it is the head
// when handed in lane order; anything else is found and removed too).
// Called with mu held.
func (j *Journal) leaveLane(it *inItem) {
	chat := it.msg.Chat
	l := j.lanes[chat]
	if l == nil {
		return
	}
	if l.q[l.head] == it {
		l.q[l.head] = nil
		l.head++
	} else if i := slices.Index(l.q[l.head:], it); i >= 0 {
		l.q = slices.Delete(l.q, l.head+i, l.head+i+1)
	}
	if l.head == len(l.q) {
		delete(j.lanes, chat)
		return
	}
	l.q, l.head = reclaim(l.q, l.head)
}

// retainOut remembers an acked phone message id, forgetting the oldest
// beyond the retention count or age.
func (j *Journal) retainOut(id string, at int64) {
	if _, ok := j.outDone[id]; ok {
		return
	}
	j.outDone[id] = at
	j.outFIFO = append(j.outFIFO, doneRef{id: id, at: at})
	cutoff := j.nowMS() - j.opts.RetainAge.Milliseconds()
	for j.outFHead < len(j.outFIFO) {
		r := j.outFIFO[j.outFHead]
		if len(j.outDone) <= j.opts.Retain && r.at >= cutoff {
			break
		}
		delete(j.outDone, r.id)
		j.outFIFO[j.outFHead] = doneRef{}
		j.outFHead++
	}
	j.outFIFO, j.outFHead = reclaim(j.outFIFO, j.outFHead)
}

// retainIn does the same for finished server messages.
func (j *Journal) retainIn(it *inItem) {
	j.inFIFO = append(j.inFIFO, it)
	cutoff := j.nowMS() - j.opts.RetainAge.Milliseconds()
	for j.inFHead < len(j.inFIFO) {
		old := j.inFIFO[j.inFHead]
		if len(j.inFIFO)-j.inFHead <= j.opts.Retain && old.at >= cutoff {
			break
		}
		delete(j.in, old.id)
		j.inFIFO[j.inFHead] = nil
		j.inFHead++
	}
	j.inFIFO, j.inFHead = reclaim(j.inFIFO, j.inFHead)
}

// reclaim drops the consumed front of a queue once it is most of it.
func reclaim[T any](q []T, head int) ([]T, int) {
	if head < 1024 || head < len(q)/2 {
		return q, head
	}
	return append(q[:0:0], q[head:]...), 0
}

// liveLocked counts the entries compaction would write.
func (j *Journal) liveLocked() int {
	return len(j.outPend) + len(j.outDone) + len(j.in)
}

// maybeCompact rewrites the live entries to a new segment when finished
// ones dominate, or when finished text has been in the file for BodyMaxAge;
// otherwise it arms a timer for when that text will be old enough. Called
// with wmu held, after a successful append.
func (j *Journal) maybeCompact() {
	j.mu.Lock()
	dead := j.deadSince
	bigDue := j.entries >= j.opts.CompactMin && j.entries > 2*j.liveLocked()
	j.mu.Unlock()
	wait := time.Duration(-1)
	if dead != 0 {
		wait = time.Duration(dead+j.opts.BodyMaxAge.Milliseconds()-j.nowMS()) * time.Millisecond
	}
	if j.compactSkip > 0 {
		j.compactSkip--
		j.armAgeTimer(max(wait, j.opts.BodyMaxAge))
		return
	}
	if !bigDue && (dead == 0 || wait > 0) {
		if dead != 0 {
			j.armAgeTimer(wait)
		}
		return
	}
	if err := j.compact(); err != nil {
		// Keep appending to the old segment; try again later.
		j.compactErr = err
		j.compactSkip = j.opts.CompactMin
		j.armAgeTimer(j.opts.BodyMaxAge)
		return
	}
	j.compactErr = nil
}

// armAgeTimer makes sure a check runs within d even if nothing is appended
// (a quiet phone: its last message's text must still go). Called with wmu
// held.
func (j *Journal) armAgeTimer(d time.Duration) {
	if j.closed {
		return
	}
	if j.ageTimer == nil {
		j.ageTimer = time.AfterFunc(d, j.compactAged)
		return
	}
	j.ageTimer.Reset(d)
}

// compactAged is the age timer's check.
func (j *Journal) compactAged() {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.closed || j.broken != nil {
		return
	}
	j.compactSkip = 0
	j.maybeCompact()
}

// Compact rewrites the live entries to a new segment now.
func (j *Journal) Compact() error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.closed {
		return ErrClosed
	}
	if j.broken != nil {
		return j.broken
	}
	return j.compact()
}

func (j *Journal) compact() error {
	es := j.snapshot()
	payloads, err := encodeEntries(es, compactPayload)
	if err != nil {
		return err
	}
	next, err := createSegment(j.dir, j.seg.num+1, payloads, j.opts.NoSync)
	if err != nil {
		return err
	}
	old := j.seg
	j.seg = next
	_ = old.close()
	// The new segment is durable and wins on open; removing the old one is
	// housekeeping (a leftover is removed on the next open).
	_ = removeFile(old.path())
	_ = syncDir(j.dir, j.opts.NoSync)
	j.mu.Lock()
	j.entries = len(es)
	j.deadSince = 0 // the new segment holds only live text
	j.mu.Unlock()
	j.compactions++
	return nil
}

// snapshot lists the live state as entries that replay to the same index:
// remembered ids first, then pending messages in their queue order.
func (j *Journal) snapshot() []Entry {
	j.mu.Lock()
	defer j.mu.Unlock()
	es := make([]Entry, 0, j.liveLocked())
	for _, r := range j.outFIFO[j.outFHead:] {
		if _, ok := j.outDone[r.id]; ok {
			es = append(es, Entry{Kind: KindOutSeen, ID: r.id, AtMS: r.at})
		}
	}
	for _, it := range j.outQ[j.outHead:] {
		if !it.done {
			m := it.msg
			es = append(es, Entry{Kind: KindOutQueued, Msg: &m, AtMS: it.at})
		}
	}
	for _, it := range j.inFIFO[j.inFHead:] {
		es = append(es, Entry{Kind: KindInSeen, ID: it.id, State: it.status.State, Reason: it.status.Reason, TSMS: it.status.TSMS, AtMS: it.at})
	}
	for _, it := range j.statQ[j.statHead:] {
		if it.state == stHanded {
			es = append(es, Entry{Kind: KindInHanded, ID: it.id, State: it.status.State, Reason: it.status.Reason, TSMS: it.status.TSMS, AtMS: it.at})
		}
	}
	for _, it := range j.recvQ[j.recvHead:] {
		if it.state == stReceived {
			m := it.msg
			es = append(es, Entry{Kind: KindInReceived, Msg: &m, AtMS: it.at})
		}
	}
	return es
}
