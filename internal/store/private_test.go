package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestChatsArePerLogin: two users writing to the same number have two
// chats; a setting one of them makes never reaches the other.
func TestChatsArePerLogin(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	alice := ChatKey{Login: "DEVA", Contact: "contact1"}
	bob := ChatKey{Login: "DEVB", Contact: "contact1"}
	if err := s.SetPrefer(ctx, alice, "sms"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NoteTransport(ctx, alice, "sms", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.PutGroup(ctx, alice, `{"name":"alice's"}`); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetChat(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	if got.Prefer != "" || got.Transport != "" || got.SIM != 0 || got.GroupJSON != "" {
		t.Fatalf("bob's chat shows alice's settings: %+v", got)
	}
	prev, err := s.NoteTransport(ctx, bob, "rcs", 0)
	if err != nil || prev != "" {
		t.Fatalf("bob's first transport note saw %q (%v), want nothing", prev, err)
	}
	got, _ = s.GetChat(ctx, alice)
	if got.Prefer != "sms" || got.Transport != "sms" || got.SIM != 2 {
		t.Fatalf("alice's chat changed by bob's: %+v", got)
	}
	if _, err := s.GetChat(ctx, ChatKey{Contact: "contact1"}); err == nil {
		t.Fatal("a chat without a login was read")
	}
	if err := s.SetPrefer(ctx, ChatKey{Contact: "contact1"}, "sms"); err == nil {
		t.Fatal("a chat without a login was written")
	}
}

// TestLegacyChatsSplit: a chat row from schema v5 (no owner) goes to every
// login that has the chat, then is gone.
func TestLegacyChatsSplit(t *testing.T) {
	ctx := context.Background()
	path := oldSchema(t, 5, `INSERT INTO chat (opaque_id, transport, prefer, sim) VALUES ('c1', 'sms', 'sms', 2), ('orphan', 'rcs', '', 0)`)
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	legacy, err := s.LegacyChats(ctx)
	if err != nil || len(legacy) != 2 {
		t.Fatalf("legacy chats %v, %v", legacy, err)
	}
	if err := s.SetPrefer(ctx, ChatKey{Login: "B", Contact: "c1"}, ""); err != nil { // B chose before the split ran
		t.Fatal(err)
	}
	if err := s.SplitLegacyChats(ctx, map[string][]string{"c1": {"A", "B"}}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.GetChat(ctx, ChatKey{Login: "A", Contact: "c1"})
	if a.Prefer != "sms" || a.Transport != "sms" || a.SIM != 2 {
		t.Fatalf("A lost the chat's settings: %+v", a)
	}
	b, _ := s.GetChat(ctx, ChatKey{Login: "B", Contact: "c1"})
	if b.Prefer != "" || b.Transport != "" {
		t.Fatalf("B's own row was overwritten: %+v", b)
	}
	if legacy, _ := s.LegacyChats(ctx); len(legacy) != 0 {
		t.Fatalf("ownerless rows left: %v", legacy)
	}
}

// TestDatabaseFilesPrivate: whatever the umask, the database and its WAL
// are 0600.
func TestDatabaseFilesPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "rcsgate.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Enqueue(context.Background(), "dev", "m", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
	// An existing database with a looser mode is tightened on open.
	loose := filepath.Join(dir, "old.db")
	if err := os.WriteFile(loose, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), loose)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if st, _ := os.Stat(loose); st.Mode().Perm() != 0o600 {
		t.Errorf("existing database left %v", st.Mode().Perm())
	}
}

// TestDeliveredBodyLeavesDisk: once a message is acked and the WAL is
// checkpointed, its text is in neither the database nor the WAL, while
// the daemon still has the database open.
func TestDeliveredBodyLeavesDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "rcsgate.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var bodies [][]byte
	for i := range 50 {
		body := []byte(fmt.Sprintf("secret body %03d of the delivered kind", i))
		bodies = append(bodies, body)
		if err := s.EnqueueSent(ctx, SentMsg{MsgID: fmt.Sprintf("$e%d", i), DeviceID: "dev", RoomID: "!r", Sender: "@u", MsgType: "m.text"}, body, 100); err != nil {
			t.Fatal(err)
		}
	}
	waiting := []byte("waiting body, not yet delivered")
	if err := s.Enqueue(ctx, "dev", "$waiting", waiting); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range bodies {
		ids = append(ids, fmt.Sprintf("$e%d", i))
	}
	if err := s.Acked(ctx, "dev", ids); err != nil {
		t.Fatal(err)
	}
	if !filesContain(t, dir, bodies[0]) {
		t.Fatal("the body is not on disk before the checkpoint: this test would prove nothing")
	}
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		if filesContain(t, dir, b) {
			t.Fatalf("delivered body %d still on disk after the checkpoint", i)
		}
	}
	if !filesContain(t, dir, waiting) {
		t.Fatal("the undelivered message is gone from disk")
	}
}

func filesContain(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, needle) {
			return true
		}
	}
	return false
}

func TestPairingOpen(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	clock := s.now()
	s.now = func() time.Time { return clock }
	open := func() bool {
		t.Helper()
		ok, err := s.PairingOpen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if open() {
		t.Fatal("pairing open without a token")
	}
	if err := s.AddPairToken(ctx, "h", "@a:x", "p", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !open() {
		t.Fatal("pairing closed with a live token")
	}
	if _, err := s.ConsumeToken(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	if open() {
		t.Fatal("pairing open after the only token was used")
	}
	if err := s.AddPairToken(ctx, "h2", "@a:x", "p", time.Minute); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Minute)
	if open() {
		t.Fatal("pairing open after the token expired")
	}
	// Tokens that ended over a day ago are forgotten.
	clock = clock.Add(25 * time.Hour)
	if err := s.AddPairToken(ctx, "h3", "@a:x", "p", time.Minute); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM pair_token`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d tokens kept (%v), want 1", n, err)
	}
}
