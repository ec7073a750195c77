package qrterm

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestWrite(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, "rcsgate://pair?addr=127.0.0.1:4443&token=x&pin=y"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	width := utf8.RuneCountInString(lines[0])
	if width < 21 || len(lines) < width/2 {
		t.Fatalf("QR code of %d×%d cells is too small to be one", width, len(lines))
	}
	for i, l := range lines {
		if utf8.RuneCountInString(l) != width {
			t.Fatalf("line %d has %d cells, want %d: a ragged code does not scan", i, utf8.RuneCountInString(l), width)
		}
	}
	// The quiet zone (light, drawn as full blocks) surrounds the code.
	if strings.Trim(lines[0], "█") != "" {
		t.Fatalf("first row is not all quiet zone: %q", lines[0])
	}
}
