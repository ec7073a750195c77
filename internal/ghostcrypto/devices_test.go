package ghostcrypto

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
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

// Ghosts' machines stay within MaxLoaded: the least recently used idle one
// leaves; one in use never does (no second machine for the same account),
// and a ghost just taken is in use.
func TestEvictionBound(t *testing.T) {
	d := &Devices{cfg: Config{MaxLoaded: 2}, ghosts: map[id.UserID]*ghost{}}
	a, _ := d.take("@a:x")
	b, _ := d.take("@b:x")
	d.drop(a)
	d.drop(b)
	c, _ := d.take("@c:x")
	if _, ok := d.ghosts["@a:x"]; ok || len(d.ghosts) != 2 || d.ghosts["@c:x"] != c {
		t.Fatalf("after taking a third: %v; want a (least recently used) gone, b and c kept", keys(d))
	}
	e, _ := d.take("@e:x") // b idle, c busy: b goes
	if _, ok := d.ghosts["@b:x"]; ok || d.ghosts["@c:x"] != c || d.ghosts["@e:x"] != e {
		t.Fatalf("busy c or new e evicted: %v", keys(d))
	}
	f, _ := d.take("@f:x") // all busy: over the bound for a moment, nobody in use evicted
	if len(d.ghosts) != 3 || d.ghosts["@f:x"] != f {
		t.Fatalf("all busy: %v; want c, e and f", keys(d))
	}
	if again, _ := d.take("@c:x"); again != c {
		t.Fatal("a second entry for a ghost in use")
	}
	d.disabled = "refused"
	if _, err := d.take("@g:x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("take after a refusal: %v, want ErrUnavailable", err)
	}
}

func keys(d *Devices) []id.UserID {
	var out []id.UserID
	for k := range d.ghosts {
		out = append(out, k)
	}
	return out
}
