package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// A file the backend gives is moved into the agent's store, not copied,
// and is back in place whenever the message is not queued; a lent file, a
// file without a stable id and the agent's own files are only copied.
func TestGivenPhoneFiles(t *testing.T) {
	body := bytes.Repeat([]byte("rcsgate"), 3000)
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	const (
		moved  = "moved"  // src gone, the store has it
		copied = "copied" // src kept, the store has a copy
		back   = "back"   // not queued: src in place, the store empty
	)
	for _, tc := range []struct {
		name   string
		id     string
		given  bool
		inDir  string // "" = a directory of the backend's; "state" = the agent's state dir
		link   bool   // src is a symlink to the file
		full   bool   // the outbox is full: Deliver fails
		crash  bool   // moved before the agent died: src empty, the store has it
		expect string
	}{
		{name: "given", id: "k1", given: true, expect: moved},
		{name: "lent", id: "k1", expect: copied},
		{name: "given without id", given: true, expect: copied},
		{name: "given from the agent's own dir", id: "k1", given: true, inDir: "state", expect: copied},
		{name: "given as a symlink", id: "k1", given: true, link: true, expect: copied},
		{name: "given, queue full", id: "k1", given: true, full: true, expect: back},
		{name: "given, moved before a crash", id: "k1", given: true, crash: true, expect: moved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			limit := 0
			if tc.full {
				limit = 1
			}
			a, err := New(Config{StateDir: state, Backend: &gatePhone{}, Log: zerolog.Nop(), OutboxLimit: limit})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			ctx := t.Context()
			if tc.full {
				if err := a.Deliver(ctx, backend.Inbound{ID: "filler", Chat: quietNumber, From: quietNumber, Text: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(state, "exec", "inbox")
			if tc.inDir == "state" {
				dir = state
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			src := filepath.Join(dir, "photo.bin")
			data := src
			if tc.link {
				data = filepath.Join(dir, "target.bin")
				if err := os.Symlink(data, src); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(data, body, 0o600); err != nil {
				t.Fatal(err)
			}
			in := fileEvent(tc.id, src, tc.given)
			if tc.crash {
				if err := os.MkdirAll(a.mediaDir(), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(src, a.mediaPath("out-", backend.WireID(tc.id))); err != nil {
					t.Fatal(err)
				}
			}
			err = a.Deliver(ctx, in)
			if tc.expect == back {
				if !errors.Is(err, ErrOutboxFull) {
					t.Fatalf("Deliver: %v, want ErrOutboxFull", err)
				}
				if got, rerr := os.ReadFile(src); rerr != nil || !bytes.Equal(got, body) {
					t.Fatalf("the given file is not back in place: %v", rerr)
				}
				if ents, _ := os.ReadDir(a.mediaDir()); len(ents) != 0 {
					t.Fatalf("the store kept %d files of a message not queued", len(ents))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			es := a.j.OutAfter(0, 0)
			if len(es) != 1 || es[0].Msg.Media == nil || es[0].Msg.Media.SHA256 != want || es[0].Msg.Media.Size != int64(len(body)) {
				t.Fatalf("queued %+v", es)
			}
			stored, err := os.ReadFile(a.mediaPath("out-", es[0].Msg.ID))
			if err != nil || !bytes.Equal(stored, body) {
				t.Fatalf("the store's copy: %v", err)
			}
			_, serr := os.Lstat(src)
			switch tc.expect {
			case moved:
				if !errors.Is(serr, os.ErrNotExist) {
					t.Fatalf("a given file was not moved (Lstat: %v)", serr)
				}
			case copied:
				if serr != nil {
					t.Fatalf("a file that may not be moved is gone: %v", serr)
				}
			}
		})
	}
}

// An event offered again with a given file (its ack was lost): the agent
// has the message, so the file goes; a lent one stays the backend's.
func TestGivenFileOfAKnownEvent(t *testing.T) {
	state := t.TempDir()
	a, err := New(Config{StateDir: state, Backend: &gatePhone{}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	dir := filepath.Join(state, "exec")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	offer := func(name string, given bool) string {
		t.Helper()
		src := filepath.Join(dir, name)
		if err := os.WriteFile(src, []byte("bytes"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := a.Deliver(t.Context(), fileEvent("k1", src, given)); err != nil {
			t.Fatal(err)
		}
		return src
	}
	offer("first.bin", true)
	if src := offer("lent-again.bin", false); !fileExists(src) {
		t.Fatal("a lent file of a known event was removed")
	}
	if src := offer("given-again.bin", true); fileExists(src) {
		t.Fatal("a given file of a known event was left behind")
	}
	if a.Pending() != 1 {
		t.Fatalf("pending %d, want 1", a.Pending())
	}
}

// fileEvent is a phone file message from the quiet contact.
func fileEvent(id, src string, given bool) backend.Inbound {
	return backend.Inbound{ID: id, Kind: wire.KindMedia, Chat: quietNumber, From: quietNumber,
		Media: &wire.Media{Name: filepath.Base(src), Mime: "application/octet-stream"}, File: src, FileGiven: given}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// A given file on another filesystem is copied; it goes once the message
// is queued and stays when it is not.
func TestGivenFileOnAnotherFilesystem(t *testing.T) {
	other, err := os.MkdirTemp("/dev/shm", "rcsgate-given-")
	if err != nil {
		t.Skipf("no second filesystem at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	state := t.TempDir()
	var a, b syscall.Stat_t
	if syscall.Stat(other, &a) != nil || syscall.Stat(state, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same filesystem as the test's temporary directory")
	}
	ag, err := New(Config{StateDir: state, Backend: &gatePhone{}, Log: zerolog.Nop(), OutboxLimit: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	offer := func(id string) (string, error) {
		src := filepath.Join(other, id+".bin")
		if err := os.WriteFile(src, []byte("bytes of "+id), 0o600); err != nil {
			t.Fatal(err)
		}
		return src, ag.Deliver(t.Context(), fileEvent(id, src, true))
	}
	src, err := offer("k1")
	if err != nil || fileExists(src) {
		t.Fatalf("queued: %v; given file still there: %v", err, fileExists(src))
	}
	if got, err := os.ReadFile(ag.mediaPath("out-", backend.WireID("k1"))); err != nil || string(got) != "bytes of k1" {
		t.Fatalf("the store's copy: %q %v", got, err)
	}
	src, err = offer("k2") // the outbox holds one: not queued
	if !errors.Is(err, ErrOutboxFull) || !fileExists(src) {
		t.Fatalf("not queued: %v; given file kept: %v", err, fileExists(src))
	}
	if fileExists(ag.mediaPath("out-", backend.WireID("k2"))) {
		t.Fatal("the store kept a copy of a message not queued")
	}
}

// Only a regular file within the limit is moved; a bigger one stays where
// it was.
func TestTakePhoneMediaLimit(t *testing.T) {
	state := t.TempDir()
	a := &Agent{cfg: Config{StateDir: state}}
	src := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(src, make([]byte, 101), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.takePhoneMedia(src, a.mediaPath("out-", "x"), 100); err == nil {
		t.Fatal("a file over the limit was taken")
	}
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("a refused file moved: %v", err)
	}
	n, sum, err := a.takePhoneMedia(src, a.mediaPath("out-", "x"), 101)
	if err != nil || n != 101 || len(sum) != 64 {
		t.Fatalf("taken: %d %q %v", n, sum, err)
	}
}
