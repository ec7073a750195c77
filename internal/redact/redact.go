// Package redact keeps phone numbers and message bodies out of logs. Both
// the server and the agent log through it; it imports nothing from Matrix.
package redact

import (
	"bytes"
	"io"
	"regexp"
)

// Number shortens a phone number to its first two and last two characters
// ("+1…00"): enough to tell conversations apart in a log, not enough to dial.
func Number(n string) string {
	if len(n) <= 4 {
		return "…"
	}
	return n[:2] + "…" + n[len(n)-2:]
}

// Text says how long a body was, never what it said.
func Text(s string) int { return len(s) }

// phoneLike matches E.164-looking runs ("+" then 7–15 digits) and the digit
// run of an escaped Matrix localpart that embeds one ("=2b12025550100").
var phoneLike = regexp.MustCompile(`(\+|=2[bB])\d{7,15}`)

// pairToken matches the token inside a pairing link (rcsgate://pair?...&token=...).
var pairToken = regexp.MustCompile(`token=[A-Za-z0-9_-]{8,}`)

// Writer masks phone-number-looking runs in every write before passing it
// on. It is the safety net under third-party code (bridgev2 logs IDs it is
// given): our own code never logs a full number in the first place.
type Writer struct{ W io.Writer }

func (w Writer) Write(p []byte) (int, error) {
	if !phoneLike.Match(p) && !pairToken.Match(p) {
		return w.W.Write(p)
	}
	masked := phoneLike.ReplaceAllFunc(p, func(m []byte) []byte {
		return append(append(bytes.Clone(m[:2]), "…"...), m[len(m)-2:]...)
	})
	masked = pairToken.ReplaceAll(masked, []byte("token=…"))
	if _, err := w.W.Write(masked); err != nil {
		return 0, err
	}
	return len(p), nil
}
