package journal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// journalHas reports whether any file of the journal holds b.
func journalHas(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, Dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		data, err := os.ReadFile(filepath.Join(dir, Dir, de.Name()))
		if err != nil {
			continue // removed while we looked
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

func secretMsg(id string) wire.Message {
	return wire.Message{ID: id, Chat: "+12025550123", Text: "secret text of " + id, TSMS: 1}
}

// TestDeliveredTextLeavesByAge: a quiet phone's last delivered messages
// (one each way) leave the file within BodyMaxAge, with nothing else
// written; what is still pending stays.
func TestDeliveredTextLeavesByAge(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{BodyMaxAge: 50 * time.Millisecond})
	for _, id := range []string{"out-done", "out-pending"} {
		if _, err := j.QueueOut(secretMsg(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := j.AckOut("out-done"); err != nil {
		t.Fatal(err)
	}
	if _, err := j.ReceiveIn([]wire.Message{secretMsg("in-done"), secretMsg("in-pending")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Handed(wire.Status{ID: "in-done", State: wire.StateSent}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for journalHas(t, dir, []byte("secret text of out-done")) || journalHas(t, dir, []byte("secret text of in-done")) {
		if time.Now().After(deadline) {
			t.Fatalf("delivered text still in the journal after %s (stats %+v)", 10*time.Second, j.Stats())
		}
		time.Sleep(5 * time.Millisecond) // polling the files, not synchronising
	}
	for _, id := range []string{"out-pending", "in-pending"} {
		if !journalHas(t, dir, []byte("secret text of "+id)) {
			t.Fatalf("pending %s lost its text", id)
		}
	}
	if got := outIDs(j.OutAfter(0, 0)); len(got) != 1 || got[0] != "out-pending" {
		t.Fatalf("pending out after the compaction: %v", got)
	}
	if e, ok := j.NextHandover(); !ok || e.Msg.ID != "in-pending" || e.Msg.Text == "" {
		t.Fatalf("pending in after the compaction: %+v %v", e, ok)
	}
}

// TestAgedTextCompactedOnAppendAndOpen: with a clock, the rule is exact:
// not before BodyMaxAge, on the first write after it, and on open when
// the agent was stopped in between.
func TestAgedTextCompactedOnAppendAndOpen(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o := Options{BodyMaxAge: time.Minute, Now: func() time.Time { return now }}
	dir := t.TempDir()
	j := open(t, dir, o)
	if _, err := j.QueueOut(secretMsg("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := j.AckOut("a"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second)
	if _, err := j.QueueOut(secretMsg("b")); err != nil {
		t.Fatal(err)
	}
	if !journalHas(t, dir, []byte("secret text of a")) || j.Stats().Compactions != 0 {
		t.Fatal("compacted before the text was BodyMaxAge old")
	}
	now = now.Add(31 * time.Second)
	if _, err := j.QueueOut(secretMsg("c")); err != nil {
		t.Fatal(err)
	}
	if journalHas(t, dir, []byte("secret text of a")) {
		t.Fatal("text older than BodyMaxAge survived a write")
	}
	// Stopped with a finished text in the file; opened after BodyMaxAge.
	if _, err := j.AckOut("b"); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if !journalHas(t, dir, []byte("secret text of b")) {
		t.Fatal("test setup: b's text should still be in the file")
	}
	now = now.Add(2 * time.Minute)
	j = open(t, dir, o)
	if journalHas(t, dir, []byte("secret text of b")) {
		t.Fatal("old finished text survived reopening")
	}
	if got := outIDs(j.OutAfter(0, 0)); len(got) != 1 || got[0] != "c" {
		t.Fatalf("pending after reopen: %v", got)
	}
	if added, _ := j.QueueOut(secretMsg("a")); added {
		t.Fatal("a finished id was forgotten by the compaction")
	}
}
