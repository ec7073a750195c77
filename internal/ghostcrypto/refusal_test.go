package ghostcrypto

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

func TestRefusal(t *testing.T) {
	httpErr := func(code int) error {
		return fmt.Errorf("upload keys: %w", mautrix.HTTPError{Response: &http.Response{StatusCode: code}})
	}
	for _, tc := range []struct {
		name      string
		err       error
		fallsBack bool
	}{
		{"bad request", httpErr(400), true},
		{"forbidden", httpErr(403), true},
		{"rate limited: retry", httpErr(429), false},
		{"server error: retry", httpErr(502), false},
		{"network: retry", errors.New("connection refused"), false},
		{"already unavailable", fmt.Errorf("x: %w", ErrUnavailable), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(refusal(tc.err), ErrUnavailable); got != tc.fallsBack {
				t.Fatalf("refusal(%v) falls back to the bot: %v, want %v", tc.err, got, tc.fallsBack)
			}
		})
	}
}
