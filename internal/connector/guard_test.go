package connector

import (
	"strings"
	"testing"
)

func TestPhoneSaid(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"  \n", ""},
		{"no signal", "the phone said “no signal”"},
		{"line\nbreak\x1b[31m", "the phone said “line break[31m”"},
		{"\u202eevil", "the phone said “evil”"},
	}
	for _, tc := range tests {
		if got := phoneSaid(tc.in); got != tc.want {
			t.Errorf("phoneSaid(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := phoneSaid(strings.Repeat("x", 1000))
	if n := len(long); n > maxShownReason+len("the phone said “”") {
		t.Fatalf("a long reason is shown with %d bytes", n)
	}
}
