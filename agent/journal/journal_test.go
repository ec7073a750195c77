package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

func open(t *testing.T, dir string, o Options) *Journal {
	t.Helper()
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func reopen(t *testing.T, j *Journal, dir string, o Options) *Journal {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return open(t, dir, o)
}

func msg(id string) wire.Message {
	return wire.Message{ID: id, Chat: "+12025550123", From: "+12025550123", Text: "text of " + id, TSMS: 1}
}

func outIDs(es []OutEntry) []string {
	var s []string
	for _, e := range es {
		s = append(s, e.Msg.ID)
	}
	return s
}

func statusIDs(es []StatusEntry) []string {
	var s []string
	for _, e := range es {
		s = append(s, e.Status.ID)
	}
	return s
}

func mustQueue(t *testing.T, j *Journal, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if added, err := j.QueueOut(msg(id)); err != nil || !added {
			t.Fatalf("queue %s: added=%v err=%v", id, added, err)
		}
	}
}

func segPath(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, Dir, "*"+segmentExt))
	if len(m) != 1 {
		t.Fatalf("want one segment, have %v", m)
	}
	return m[0]
}

func TestOutOrderResendAckAndReplay(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustQueue(t, j, "a1", "b1", "a2", "b2")
	es := j.OutAfter(0, 0)
	if got := outIDs(es); !slices.Equal(got, []string{"a1", "b1", "a2", "b2"}) {
		t.Fatalf("first send: %v", got)
	}
	last := es[len(es)-1].Seq
	ch := j.Changed()
	if es := j.OutAfter(last, 0); len(es) != 0 {
		t.Fatalf("nothing new expected, got %v", outIDs(es))
	}
	mustQueue(t, j, "a3")
	select {
	case <-ch:
	default:
		t.Fatal("QueueOut did not signal Changed")
	}
	if got := outIDs(j.OutAfter(last, 0)); !slices.Equal(got, []string{"a3"}) {
		t.Fatalf("after last: %v", got)
	}
	if n, err := j.AckOut("b1", "a2", "nope", "b1"); err != nil || n != 2 {
		t.Fatalf("acked %d (%v), want 2", n, err)
	}
	if got := outIDs(j.OutAfter(0, 2)); !slices.Equal(got, []string{"a1", "b2"}) {
		t.Fatalf("resend with max 2: %v", got)
	}
	// A message the phone hands again (queued or acked) is not queued twice.
	for _, id := range []string{"a1", "b1"} {
		if added, err := j.QueueOut(msg(id)); err != nil || added {
			t.Fatalf("re-queue %s: added=%v err=%v", id, added, err)
		}
	}

	// After a restart: the same queue, same order, acked ids remembered.
	j = reopen(t, j, dir, Options{})
	if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"a1", "b2", "a3"}) {
		t.Fatalf("after reopen: %v", got)
	}
	if added, _ := j.QueueOut(msg("a2")); added {
		t.Fatal("acked id queued again after reopen")
	}
	if d := j.Depth(); d.Out != 3 {
		t.Fatalf("depth %+v", d)
	}
	if _, err := j.AckOut("a1", "b2", "a3"); err != nil {
		t.Fatal(err)
	}
	if d := j.Depth(); d.Out != 0 {
		t.Fatalf("depth after acking all: %+v", d)
	}
}

func TestInHandoverStatusAndDedupe(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	res, err := j.ReceiveIn([]wire.Message{msg("s1"), msg("s2"), msg("s1"), msg("s3")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []InResult{InNew, InNew, InPending, InNew}; !slices.Equal(res, want) {
		t.Fatalf("results %v, want %v", res, want)
	}
	if d := j.Depth(); d.In != 3 || d.Status != 0 {
		t.Fatalf("depth %+v", d)
	}
	e, ok := j.NextHandover()
	if !ok || e.Msg.ID != "s1" || e.Msg.Text != "text of s1" {
		t.Fatalf("next handover %+v %v", e, ok)
	}
	if err := j.Handed(wire.Status{ID: "s1", State: wire.StateSent, TSMS: 5}); err != nil {
		t.Fatal(err)
	}
	if err := j.Handed(wire.Status{ID: "s1", State: wire.StateFailed, Reason: "late"}); err != nil {
		t.Fatal(err) // second outcome for the same message: ignored
	}
	if e, _ := j.NextHandover(); e.Msg.ID != "s2" {
		t.Fatalf("next after s1: %+v", e)
	}
	if err := j.Handed(wire.Status{ID: "s2", State: wire.StateFailed, Reason: "bad number", TSMS: 6}); err != nil {
		t.Fatal(err)
	}
	sts := j.StatusAfter(0, 0)
	if got := statusIDs(sts); !slices.Equal(got, []string{"s1", "s2"}) || sts[0].Status.State != wire.StateSent || sts[1].Status.Reason != "bad number" {
		t.Fatalf("statuses %+v", sts)
	}
	// A stale ack (other state) is ignored; the right one finishes s1.
	if n, _ := j.AckStatus(wire.StatusRef{ID: "s1", State: wire.StateFailed}); n != 0 {
		t.Fatal("ack with the wrong state accepted")
	}
	if n, _ := j.AckStatus(wire.StatusRef{ID: "s1", State: wire.StateSent}); n != 1 {
		t.Fatal("status ack not recorded")
	}

	// Restart: s1 done, s2 status pending, s3 still to hand over.
	j = reopen(t, j, dir, Options{})
	if d := j.Depth(); d.In != 1 || d.Status != 1 {
		t.Fatalf("depth after reopen %+v", d)
	}
	if got := statusIDs(j.StatusAfter(0, 0)); !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("statuses after reopen: %v", got)
	}
	if e, _ := j.NextHandover(); e.Msg.ID != "s3" {
		t.Fatalf("handover after reopen: %+v", e)
	}
	res, _ = j.ReceiveIn([]wire.Message{msg("s1"), msg("s2"), msg("s3"), msg("s4")})
	if want := []InResult{InDone, InHanded, InPending, InNew}; !slices.Equal(res, want) {
		t.Fatalf("results after reopen %v, want %v", res, want)
	}
	if st, r, ok := j.LookupIn("s1"); !ok || r != InDone || st.State != wire.StateSent || st.TSMS != 5 {
		t.Fatalf("lookup s1: %+v %v %v", st, r, ok)
	}
}

func TestLimitsRefuseClearly(t *testing.T) {
	j := open(t, t.TempDir(), Options{MaxOut: 2, MaxIn: 2})
	mustQueue(t, j, "1", "2")
	_, err := j.QueueOut(msg("3"))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "limit 2") {
		t.Fatalf("got %v, want ErrFull naming the limit", err)
	}
	if _, err := j.AckOut("1"); err != nil {
		t.Fatal(err)
	}
	mustQueue(t, j, "3")

	res, err := j.ReceiveIn([]wire.Message{msg("a"), msg("b"), msg("c")})
	if err != nil || !slices.Equal(res, []InResult{InNew, InNew, InFull}) {
		t.Fatalf("%v %v", res, err)
	}
	bad := msg("\xff")
	if res, _ := j.ReceiveIn([]wire.Message{bad}); res[0] != InInvalid {
		t.Fatalf("non-UTF-8 id: %v", res)
	}
	// A handed message still counts until its status is acked.
	_ = j.Handed(wire.Status{ID: "a", State: wire.StateSent})
	if res, _ := j.ReceiveIn([]wire.Message{msg("c")}); res[0] != InFull {
		t.Fatalf("got %v, want full while a's status is pending", res)
	}
	_, _ = j.AckStatus(wire.StatusRef{ID: "a", State: wire.StateSent})
	if res, _ := j.ReceiveIn([]wire.Message{msg("c")}); res[0] != InNew {
		t.Fatalf("got %v, want room after the status ack", res)
	}
}

func TestTornTailTruncated(t *testing.T) {
	for _, cut := range []int{1, 4, 7, 8, 9, 20} {
		t.Run(fmt.Sprint("cut ", cut), func(t *testing.T) {
			dir := t.TempDir()
			j := open(t, dir, Options{})
			mustQueue(t, j, "m1", "m2")
			j.Close()
			p := segPath(t, dir)
			good, _ := os.Stat(p)
			// A third record, cut short as if the process died mid-write.
			j = open(t, dir, Options{})
			mustQueue(t, j, "m3")
			j.Close()
			full, _ := os.Stat(p)
			if err := os.Truncate(p, good.Size()+int64(cut)); err != nil {
				t.Fatal(err)
			}
			_ = full
			j = open(t, dir, Options{})
			if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"m1", "m2"}) {
				t.Fatalf("after torn tail: %v", got)
			}
			if st := j.Stats(); st.TornBytes != cut {
				t.Fatalf("torn bytes %d, want %d", st.TornBytes, cut)
			}
			if fi, _ := os.Stat(p); fi.Size() != good.Size() {
				t.Fatalf("file is %d bytes, want truncated to %d", fi.Size(), good.Size())
			}
			// Appending after the repair works and survives another reopen.
			mustQueue(t, j, "m3")
			j = reopen(t, j, dir, Options{})
			if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
				t.Fatalf("after repair and append: %v", got)
			}
		})
	}
}

func TestZeroFilledTailTruncated(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustQueue(t, j, "m1")
	j.Close()
	f, _ := os.OpenFile(segPath(t, dir), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, 4096)) // a file system that extended the file but never wrote the data
	f.Close()
	j = open(t, dir, Options{})
	if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("got %v", got)
	}
	if j.Stats().TornBytes != 4096 {
		t.Fatalf("stats %+v", j.Stats())
	}
}

func TestCorruptMiddleIsAnError(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustQueue(t, j, "m1", "m2", "m3")
	j.Close()
	p := segPath(t, dir)
	b, _ := os.ReadFile(p)
	// Flip a byte inside the second record's payload.
	first := headerSize + recordHeaderSize + int(le32(b[headerSize:]))
	b[first+recordHeaderSize+5] ^= 0x55
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != p || ce.Offset != int64(first) {
		t.Fatalf("error %v does not name %s at offset %d", err, p, first)
	}
	if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), fmt.Sprint("offset ", first)) {
		t.Fatalf("message does not say where: %v", err)
	}
	// The file is left as it was for a human to look at.
	if after, _ := os.ReadFile(p); len(after) != len(b) {
		t.Fatal("a corrupt journal was modified")
	}
}

func TestBadHeaderIsAnError(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	j.Close()
	p := segPath(t, dir)
	os.WriteFile(p, []byte("hello world, not a journal"), 0o600)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("got %v", err)
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestCompactionKeepsOrderAndLiveEntries(t *testing.T) {
	dir := t.TempDir()
	o := Options{CompactMin: 64, Retain: 50}
	j := open(t, dir, o)
	var want []string
	for i := range 300 {
		id := fmt.Sprintf("p%03d", i)
		mustQueue(t, j, id)
		if i%10 == 3 { // every tenth stays pending
			want = append(want, id)
			continue
		}
		if _, err := j.AckOut(id); err != nil {
			t.Fatal(err)
		}
	}
	var wantIn []string
	for i := range 200 {
		id := fmt.Sprintf("s%03d", i)
		if _, err := j.ReceiveIn([]wire.Message{msg(id)}); err != nil {
			t.Fatal(err)
		}
		if i >= 190 {
			wantIn = append(wantIn, id)
			continue
		}
		_ = j.Handed(wire.Status{ID: id, State: wire.StateSent})
		if i < 180 {
			_, _ = j.AckStatus(wire.StatusRef{ID: id, State: wire.StateSent})
		}
	}
	st := j.Stats()
	if st.Compactions == 0 || st.CompactErr != nil {
		t.Fatalf("no compaction: %+v", st)
	}
	if st.Entries > 2*st.Live+o.CompactMin {
		t.Fatalf("segment not bounded: %+v", st)
	}
	check := func(j *Journal) {
		t.Helper()
		if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, want) {
			t.Fatalf("pending out %v, want %v", got, want)
		}
		if got := statusIDs(j.StatusAfter(0, 0)); len(got) != 10 || got[0] != "s180" || got[9] != "s189" {
			t.Fatalf("pending statuses %v", got)
		}
		var in []string
		for {
			e, ok := j.NextHandover()
			if !ok {
				break
			}
			in = append(in, e.Msg.ID)
			_ = j.Handed(wire.Status{ID: e.Msg.ID, State: wire.StateSent})
		}
		if !slices.Equal(in, wantIn) {
			t.Fatalf("handover %v, want %v", in, wantIn)
		}
		// Recent finished ids are remembered; the oldest beyond Retain are not.
		if added, _ := j.QueueOut(msg("p299")); added {
			t.Fatal("recently acked id queued again")
		}
		if _, r, _ := j.LookupIn("s179"); r != InDone {
			t.Fatal("recently finished server id forgotten")
		}
		if _, _, ok := j.LookupIn("s000"); ok {
			t.Fatal("id beyond the retention count still remembered")
		}
	}
	// Check on a reopened copy: the live state survived compaction.
	j.Close()
	cp := t.TempDir()
	copyDir(t, filepath.Join(dir, Dir), filepath.Join(cp, Dir))
	check(open(t, cp, o))
	// The old segment is gone; only the new one remains.
	if p := segPath(t, dir); filepath.Base(p) == segmentName(1) {
		t.Fatalf("still on the first segment: %s", p)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	os.MkdirAll(to, 0o700)
	des, _ := os.ReadDir(from)
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(from, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, de.Name()), b, 0o600)
	}
}

// A crash during compaction leaves a .tmp file (not yet renamed) or the old
// segment beside the new one (renamed, old not yet removed); open sorts it out.
func TestCrashDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustQueue(t, j, "a", "b")
	_, _ = j.AckOut("a")
	j.Close()
	old := segPath(t, dir)
	oldBytes, _ := os.ReadFile(old)

	// Case 1: unfinished compaction: a half-written .tmp of segment 2.
	os.WriteFile(filepath.Join(dir, Dir, segmentName(2)+".tmp"), []byte("rcsgJNL\x01garbage"), 0o600)
	j = open(t, dir, Options{})
	if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("case 1: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, Dir, segmentName(2)+".tmp")); !os.IsNotExist(err) {
		t.Fatal("leftover .tmp not removed")
	}

	// Case 2: compaction renamed segment 2 into place but died before
	// removing segment 1, which holds stale state (a is pending there).
	if err := j.Compact(); err != nil {
		t.Fatal(err)
	}
	mustQueue(t, j, "c")
	j.Close()
	os.WriteFile(old, oldBytes, 0o600)
	j = open(t, dir, Options{})
	if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("case 2: %v", got)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatal("superseded segment not removed")
	}
}

func TestRetentionByAge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o := Options{RetainAge: time.Hour, Now: func() time.Time { return now }}
	dir := t.TempDir()
	j := open(t, dir, o)
	mustQueue(t, j, "old")
	_, _ = j.AckOut("old")
	now = now.Add(2 * time.Hour)
	mustQueue(t, j, "new")
	_, _ = j.AckOut("new") // finishing "new" evicts "old", which is past the age
	if added, _ := j.QueueOut(msg("old")); !added {
		t.Fatal("id older than the retention age still remembered")
	}
	if added, _ := j.QueueOut(msg("new")); added {
		t.Fatal("recent id forgotten")
	}
}

func TestClosedRefusesWrites(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	mustQueue(t, j, "a")
	j.Close()
	if _, err := j.QueueOut(msg("b")); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
	if d := j.Depth(); d.Out != 1 {
		t.Fatalf("index not readable after close: %+v", d)
	}
}

func TestNoSyncOption(t *testing.T) {
	// The benchmark baseline path: same format, no fsync.
	dir := t.TempDir()
	j := open(t, dir, Options{NoSync: true})
	mustQueue(t, j, "a")
	j = reopen(t, j, dir, Options{})
	if got := outIDs(j.OutAfter(0, 0)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("got %v", got)
	}
}

func TestEncodeSplitsLargeAppends(t *testing.T) {
	var es []Entry
	for i := range 100 {
		m := msg(fmt.Sprint("big", i))
		m.Text = strings.Repeat("x", 60_000)
		es = append(es, Entry{Kind: KindInReceived, Msg: &m, AtMS: 1})
	}
	ps, err := encodeEntries(es, MaxRecord)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 2 {
		t.Fatalf("%d payloads, want the batch split", len(ps))
	}
	n := 0
	for _, p := range ps {
		if len(p) > MaxRecord {
			t.Fatalf("payload of %d bytes", len(p))
		}
		got, err := decodePayload(p)
		if err != nil {
			t.Fatal(err)
		}
		n += len(got)
	}
	if n != len(es) {
		t.Fatalf("%d entries back, want %d", n, len(es))
	}
}

// Each chat is a lane: its messages are handed in the order received, and
// chats do not wait for one another; the lanes survive a reopen and a
// compaction.
func TestHandoverLanes(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{CompactMin: 1})
	in := func(id, chat string) wire.Message {
		m := msg(id)
		m.Chat = chat
		return m
	}
	const a, b, c = "+12025550001", "+12025550002", "g:group-c"
	if _, err := j.ReceiveIn([]wire.Message{in("a1", a), in("b1", b), in("a2", a), in("c1", c), in("b2", b), in("a3", a)}); err != nil {
		t.Fatal(err)
	}
	heads := func(j *Journal, skip ...string) string {
		var ids []string
		for _, e := range j.HandoverHeads(func(chat string) bool { return slices.Contains(skip, chat) }) {
			ids = append(ids, e.Msg.ID)
		}
		return strings.Join(ids, " ")
	}
	hand := func(j *Journal, id string) {
		t.Helper()
		if err := j.Handed(wire.Status{ID: id, State: wire.StateSent}); err != nil {
			t.Fatal(err)
		}
	}
	if got := heads(j); got != "a1 b1 c1" {
		t.Fatalf("heads %q, want the oldest of each chat, oldest first", got)
	}
	// Chat a is stuck (its head is being retried): the others go on.
	if got := heads(j, a); got != "b1 c1" {
		t.Fatalf("heads skipping a: %q", got)
	}
	hand(j, "b1")
	hand(j, "c1")
	hand(j, "b2")
	if got := heads(j, a); got != "" {
		t.Fatalf("heads skipping a after b and c are done: %q", got)
	}
	if got := heads(j); got != "a1" {
		t.Fatalf("heads %q, want a1 (a still waits in order)", got)
	}
	// After a restart (and a compaction) chat a resumes where it was.
	j = reopen(t, j, dir, Options{CompactMin: 1})
	if err := j.Compact(); err != nil {
		t.Fatal(err)
	}
	j = reopen(t, j, dir, Options{CompactMin: 1})
	if got := heads(j); got != "a1" {
		t.Fatalf("heads after reopen %q, want a1", got)
	}
	hand(j, "a1")
	if got := heads(j); got != "a2" {
		t.Fatalf("heads %q, want a2", got)
	}
	// A message handed out of lane order (not done by the agent, but
	// possible through Handed) leaves its lane too.
	hand(j, "a3")
	if got := heads(j); got != "a2" {
		t.Fatalf("heads %q, want a2", got)
	}
	hand(j, "a2")
	if got := heads(j); got != "" {
		t.Fatalf("heads %q after everything was handed", got)
	}
	if d := j.Depth(); d.In != 0 {
		t.Fatalf("depth %+v", d)
	}
	if _, ok := j.NextHandover(); ok {
		t.Fatal("NextHandover has something left")
	}
}
