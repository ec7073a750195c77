package phone

import (
	"errors"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, region, want string }{
		{"+12025550100", "", "+12025550100"},
		{" +1 (202) 555-0100 ", "", "+12025550100"},
		{"+44 20 7946 0018", "", "+442079460018"},
		{"(202) 555-0100", "US", "+12025550100"},
		{"030 123456", "DE", "+4930123456"},
		{"0151 12345678", "de", "+4915112345678"},
		{"12025550100", "", ""},       // no country code, no region
		{"+1", "", ""},                // too short
		{"+1202555010a", "", ""},      // letters
		{"+1234567890123456", "", ""}, // too long
		{"", "", ""},
		{"+1 000 000 0000", "", ""}, // not a valid US number
		{"hello", "US", ""},
	}
	for _, tc := range tests {
		got, err := NormalizeIn(tc.in, tc.region)
		if tc.want == "" {
			if !errors.Is(err, ErrNotANumber) {
				t.Errorf("NormalizeIn(%q, %q) = %q, %v; want ErrNotANumber", tc.in, tc.region, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeIn(%q, %q) = %q, %v; want %q", tc.in, tc.region, got, err, tc.want)
		}
	}
}

func TestNormalizeSender(t *testing.T) {
	if got, err := NormalizeSender("+1 202 555 0100", ""); err != nil || got != "+12025550100" {
		t.Fatalf("NormalizeSender = %q, %v", got, err)
	}
	if _, err := NormalizeSender("+1 2", ""); !errors.Is(err, ErrNotANumber) {
		t.Fatalf("short sender accepted: %v", err)
	}
}

func TestFormat(t *testing.T) {
	if got := Format("+12025550100"); got != "+1 202-555-0100" {
		t.Fatalf("Format = %q", got)
	}
	if got := Format("g:abc"); got != "g:abc" {
		t.Fatalf("Format of a non-number = %q", got)
	}
	if !ValidRegion("de") || ValidRegion("XX") {
		t.Fatal("ValidRegion wrong")
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add("+1 (202) 555-0100", "")
	f.Add("030 123456", "DE")
	f.Fuzz(func(t *testing.T, s, region string) {
		if len(region) > 3 {
			return
		}
		n, err := NormalizeIn(s, region)
		if err != nil {
			return
		}
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, n, again, err)
		}
	})
}
