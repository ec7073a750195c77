package phone

import (
	"errors"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+12025550100", "+12025550100"},
		{" +1 (202) 555-0100 ", "+12025550100"},
		{"+44.20.7946.0018", "+442079460018"},
		{"12025550100", ""},
		{"+1", ""},
		{"+0123456789", ""},
		{"+1202555010a", ""},
		{"+1234567890123456", ""},
		{"", ""},
		{"1+2025550100", ""},
	}
	for _, tc := range tests {
		got, err := Normalize(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrNotANumber) {
				t.Errorf("Normalize(%q) = %q, %v; want ErrNotANumber", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add("+1 (202) 555-0100")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, n, again, err)
		}
	})
}
