package hoptrace

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMarkAndRead(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "p-1.trace"))
	if err != nil {
		t.Fatal(err)
	}
	out = f
	t.Cleanup(func() { out = nil; f.Close() })

	Mark(Pushed, "$evt")
	Mark(Queued, "$evt")
	Mark(Pushed, "$evt") // a second mark of the same hop: the first wins
	Mark(InRecv, "ph with space\n")
	Mark(Queued, "") // no key: not recorded
	// A torn line from a killed process and a stranger's line are skipped.
	if _, err := f.WriteString("123 only-two\nnot-a-number x y\n17"); err != nil {
		t.Fatal(err)
	}
	tr, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, ok1 := tr.At(Pushed, "$evt")
	q, ok2 := tr.At(Queued, "$evt")
	if !ok1 || !ok2 || q.Before(p) {
		t.Fatalf("pushed %v (%v), queued %v (%v): want both, queued not before pushed", p, ok1, q, ok2)
	}
	if _, ok := tr.At(InRecv, "ph_with_space_"); !ok {
		t.Fatal("a key with blanks must be recorded with them replaced")
	}
	if n := len(tr[Queued]); n != 1 {
		t.Fatalf("%d queued marks, want 1", n)
	}
	if len(tr) != 3 {
		t.Fatalf("hops %v: want exactly pushed, queued, in.recv", tr)
	}
}

func TestOffByDefault(t *testing.T) {
	if os.Getenv(EnvVar) != "" {
		t.Skip(EnvVar + " is set")
	}
	if On() {
		t.Fatal("tracing must be off without " + EnvVar)
	}
	Mark(Pushed, "$x") // must not panic or write anywhere
}
