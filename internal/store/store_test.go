package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "rcsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	clock := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return clock }
	if err := s.AddPairToken(ctx, "h1", "@a:x", "phone", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPairToken(ctx, "h2", "@a:x", "phone", time.Minute); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		hash    string
		advance time.Duration
		want    error
	}{
		{"first use", "h1", 0, nil},
		{"reuse", "h1", 0, ErrTokenUsed},
		{"unknown", "nope", 0, ErrTokenUnknown},
		{"expired", "h2", 2 * time.Minute, ErrTokenExpired},
	}
	for _, tc := range tests {
		clock = clock.Add(tc.advance)
		tok, err := s.ConsumeToken(ctx, tc.hash)
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && tok.Owner != "@a:x" {
			t.Fatalf("%s: owner %q", tc.name, tok.Owner)
		}
	}
}

func TestOutboxOrderDedupeAck(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, id := range []string{"a", "b", "a", "c"} {
		if err := s.Enqueue(ctx, "dev", id, []byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	items, err := s.Pending(ctx, "dev", 0, 10)
	if err != nil || len(items) != 3 || items[0].MsgID != "a" || items[2].MsgID != "c" {
		t.Fatalf("pending = %+v, %v", items, err)
	}
	if err := s.Acked(ctx, "dev", []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueDepth(ctx, "dev"); n != 1 {
		t.Fatalf("depth %d, want 1", n)
	}
	rest, _ := s.Pending(ctx, "dev", items[0].Seq, 10)
	if len(rest) != 1 || rest[0].MsgID != "c" {
		t.Fatalf("rest = %+v", rest)
	}
}

func TestDevicesAndContacts(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.GetDevice(ctx, "x"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("got %v", err)
	}
	if err := s.AddDevice(ctx, Device{ID: "x", Name: "n", Owner: "@a:x", CertDER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, "x")
	if err != nil || d.Owner != "@a:x" || !d.Revoked.IsZero() {
		t.Fatalf("device %+v %v", d, err)
	}
	if _, err := s.Contact(ctx, "o"); !errors.Is(err, ErrNoContact) {
		t.Fatalf("got %v", err)
	}
	_ = s.PutContact(ctx, "o", "+12025550100")
	if n, err := s.Contact(ctx, "o"); err != nil || n != "+12025550100" {
		t.Fatalf("contact %q %v", n, err)
	}
}

func TestForgetBefore(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, t.TempDir()+"/t.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	s.now = func() time.Time { return now.Add(-48 * time.Hour) }
	for _, id := range []string{"$old-done", "$old-queued"} {
		if err := s.EnqueueSent(ctx, SentMsg{MsgID: id, DeviceID: "d", RoomID: "!r", Sender: "@u", MsgType: "m.text"}, []byte("x"), 10); err != nil {
			t.Fatal(err)
		}
		if err := s.PutMediaOut(ctx, MediaOut{MsgID: id, URL: "mxc://x/y"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Acked(ctx, "d", []string{"$old-done"}); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return now }
	if err := s.EnqueueSent(ctx, SentMsg{MsgID: "$new", DeviceID: "d", RoomID: "!r", Sender: "@u", MsgType: "m.text"}, []byte("x"), 10); err != nil {
		t.Fatal(err)
	}
	n, err := s.ForgetBefore(ctx, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 { // the acked message's status and file record
		t.Fatalf("forgot %d records, want 2", n)
	}
	if _, err := s.GetSent(ctx, "$old-done"); err == nil {
		t.Fatal("old finished message still remembered")
	}
	for _, id := range []string{"$old-queued", "$new"} {
		if _, err := s.GetSent(ctx, id); err != nil {
			t.Fatalf("%s forgotten: %v", id, err)
		}
	}
	if _, err := s.GetMediaOut(ctx, "$old-queued"); err != nil {
		t.Fatal("file of a queued message forgotten")
	}
}

// Contacts whose masked numbers look alike get a stable place among them,
// in the order they were met; other contacts stay 1.
func TestContactSeq(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, c := range []struct{ id, number string }{
		{"a", "+12025550100"}, {"b", "+13105550100"}, {"c", "+12025550199"}, {"a", "+12025550100"}, {"d", "+14155550100"},
	} {
		if err := s.PutContact(ctx, c.id, c.number); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]int{"a": 1, "b": 2, "c": 1, "d": 3, "unknown": 0} {
		if got, err := s.ContactSeq(ctx, id); err != nil || got != want {
			t.Errorf("ContactSeq(%s) = %d, %v; want %d", id, got, err, want)
		}
	}
}

// The v7 migration numbers contacts met before it the same way.
func TestContactSeqMigration(t *testing.T) {
	ctx := context.Background()
	path := oldSchema(t, 6, `INSERT INTO contact (opaque_id, number) VALUES ('a', '+12025550100'), ('b', '+12025550199'), ('c', '+13105550100')`)
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for id, want := range map[string]int{"a": 1, "b": 1, "c": 2} {
		if got, err := s.ContactSeq(ctx, id); err != nil || got != want {
			t.Errorf("after migration ContactSeq(%s) = %d, %v; want %d", id, got, err, want)
		}
	}
	if err := s.PutContact(ctx, "d", "+14155550100"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ContactSeq(ctx, "d"); got != 3 {
		t.Errorf("a contact met after the migration: seq %d, want 3", got)
	}
}

// oldSchema makes a database at schema version (migrations up to it) with
// seed's rows, as an older rcsgate left it, and returns its path.
func oldSchema(t *testing.T, version int, seed string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, m := range migrations[:version] {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d; %s", version, seed)); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNoteTransport(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	key := ChatKey{Login: "login1", Contact: "chat1"}
	for i, step := range []struct {
		transport string
		sim       int
		wantPrev  string
		wantSIM   int
	}{
		{"rcs", 1, "", 1},    // first event of the chat
		{"rcs", 1, "rcs", 1}, // unchanged: nothing rewritten
		{"sms", 0, "rcs", 1}, // fell back to SMS; no SIM given keeps the SIM
		{"sms", 2, "sms", 2}, // moved to the other SIM
		{"rcs", 2, "sms", 2},
	} {
		prev, err := s.NoteTransport(ctx, key, step.transport, step.sim)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.GetChat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if prev != step.wantPrev || c.Transport != step.transport || c.SIM != step.wantSIM {
			t.Fatalf("step %d: prev %q, chat %+v; want prev %q, transport %q, SIM %d", i, prev, c, step.wantPrev, step.transport, step.wantSIM)
		}
	}
}

func TestHandledEventsAndValues(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	clock := time.Unix(2_000_000, 0)
	s.now = func() time.Time { return clock }
	if done, err := s.EventHandled(ctx, "$a"); err != nil || done {
		t.Fatalf("unknown event: %v, %v", done, err)
	}
	for range 2 { // marking twice is a no-op
		if err := s.MarkEventHandled(ctx, "$a", "!r"); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(time.Hour)
	if err := s.MarkEventHandled(ctx, "$b", "!r"); err != nil {
		t.Fatal(err)
	}
	if done, _ := s.EventHandled(ctx, "$a"); !done {
		t.Fatal("$a not recorded")
	}
	if n, err := s.ForgetEventsBefore(ctx, clock.Add(-time.Minute)); err != nil || n != 1 {
		t.Fatalf("ForgetEventsBefore = %d, %v; want 1", n, err)
	}
	if done, _ := s.EventHandled(ctx, "$a"); done {
		t.Fatal("$a still recorded after it was forgotten")
	}
	if done, _ := s.EventHandled(ctx, "$b"); !done {
		t.Fatal("$b forgotten too early")
	}

	if _, ok, err := s.Value(ctx, "k"); ok || err != nil {
		t.Fatalf("unset value: %v, %v", ok, err)
	}
	for _, v := range []string{"one", "two"} {
		if err := s.SetValue(ctx, "k", v); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.Value(ctx, "k"); got != v || !ok || err != nil {
			t.Fatalf("Value = %q, %v, %v; want %q", got, ok, err, v)
		}
	}
	if err := s.SetValue(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Value(ctx, "k"); ok {
		t.Fatal("empty value did not delete")
	}
}

func TestTxnDoneNeedsSameBody(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.MarkTxnDone(ctx, "t1", "sha-a", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, sha string
		want    bool
	}{{"t1", "sha-a", true}, {"t1", "sha-b", false}, {"t2", "sha-a", false}} {
		if got, err := s.TxnDone(ctx, tc.id, tc.sha); err != nil || got != tc.want {
			t.Errorf("TxnDone(%s, %s) = %v, %v; want %v", tc.id, tc.sha, got, err, tc.want)
		}
	}
}

func TestLastConfirmed(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	clock := time.Unix(3_000_000, 0)
	s.now = func() time.Time { return clock }
	if _, ok, err := s.LastConfirmed(ctx, "dev"); ok || err != nil {
		t.Fatalf("nothing sent yet: %v, %v", ok, err)
	}
	for _, id := range []string{"$a", "$b"} {
		if err := s.EnqueueSent(ctx, SentMsg{MsgID: id, DeviceID: "dev", RoomID: "!r", Sender: "@u", MsgType: "m.text"}, []byte("x"), 10); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := s.LastConfirmed(ctx, "dev"); ok {
		t.Fatal("queued messages count as confirmed")
	}
	clock = clock.Add(time.Minute)
	if _, err := s.AdvanceSent(ctx, "$b", "sent"); err != nil {
		t.Fatal(err)
	}
	if at, ok, err := s.LastConfirmed(ctx, "dev"); !ok || err != nil || !at.Equal(clock) {
		t.Fatalf("LastConfirmed = %v, %v, %v; want %v", at, ok, err, clock)
	}
	if _, ok, _ := s.LastConfirmed(ctx, "other"); ok {
		t.Fatal("another device's send counted")
	}
}
