package redact

import (
	"bytes"
	"strings"
	"testing"
)

func TestNumber(t *testing.T) {
	for in, want := range map[string]string{"+12025550100": "+1…00", "123": "…", "": "…"} {
		if got := Number(in); got != want {
			t.Errorf("Number(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriterMasks(t *testing.T) {
	var buf bytes.Buffer
	w := Writer{W: &buf}
	in := `{"link":"rcsgate://pair?addr=127.0.0.1%3A4443&token=abcdefghijklmnopqrstuvwxyz012345&pin=x","portal":"+12025550100","ghost":"@rcs_=2b4915112345678:localhost","ts":1764201234567}` + "\n"
	n, err := w.Write([]byte(in))
	if err != nil || n != len(in) {
		t.Fatalf("write: %d %v", n, err)
	}
	out := buf.String()
	for _, leak := range []string{"12025550100", "4915112345678", "abcdefghijklmnop"} {
		if strings.Contains(out, leak) {
			t.Fatalf("number leaked: %s", out)
		}
	}
	if !strings.Contains(out, "1764201234567") {
		t.Fatalf("plain numbers must survive: %s", out)
	}
}
