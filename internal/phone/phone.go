// Package phone normalises and formats phone numbers. This first cut accepts
// international (E.164) numbers only; region-aware parsing comes with
// github.com/nyaruka/phonenumbers.
package phone

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotANumber is returned for anything that is not an international number.
var ErrNotANumber = errors.New("not a phone number")

// Normalize turns "+1 (202) 555-0100" into "+12025550100".
func Normalize(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		return "", fmt.Errorf("%w: too long", ErrNotANumber)
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		default:
			return "", fmt.Errorf("%w: unexpected %q; write it in international form, like +12025550100", ErrNotANumber, r)
		}
	}
	n := b.String()
	if !strings.HasPrefix(n, "+") {
		return "", fmt.Errorf("%w: write it in international form with the country code, like +12025550100", ErrNotANumber)
	}
	if d := len(n) - 1; d < 7 || d > 15 || n[1] == '0' {
		return "", fmt.Errorf("%w: an international number has 7 to 15 digits after +, not starting with 0", ErrNotANumber)
	}
	return n, nil
}

// Format renders a normalised number for display (kept simple: E.164).
func Format(n string) string { return n }
