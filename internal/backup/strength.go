package backup

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A backup holds the device CA key, the bridge's crypto keys and every
// number: whoever gets an archive can try passphrases offline for as long
// as they like (age's scrypt makes each guess cost about a second on one
// core, not on a rack of GPUs). So a passphrase must be long and not made
// of the patterns guessers try first.

// MinPassphraseLen is the shortest backup passphrase accepted, in characters.
const MinPassphraseLen = 12

// minPassphraseBits is the least estimated strength (length × log2 of the
// character classes used).
const minPassphraseBits = 56

// ErrWeakPassphrase is returned for a passphrase CheckPassphrase refuses.
var ErrWeakPassphrase = errors.New("the backup passphrase is too weak")

// commonWords make a short passphrase guessable whatever surrounds them.
var commonWords = []string{"password", "passwort", "motdepasse", "qwerty", "azerty", "letmein", "iloveyou", "123456", "rcsgate", "backup", "admin", "secret"}

// CheckPassphrase says why pass is too weak to encrypt a backup to, or nil.
// Only new backups are checked: an old archive opens with whatever it was
// made with.
func CheckPassphrase(pass string) error {
	weak := func(why string) error {
		return fmt.Errorf("%w: %s; use at least %d characters that are not a word, a sequence or a repeat (four random words work well), or encrypt to an age key with --recipient",
			ErrWeakPassphrase, why, MinPassphraseLen)
	}
	n := utf8.RuneCountInString(pass)
	if n < MinPassphraseLen {
		return weak(fmt.Sprintf("%d characters", n))
	}
	lower := strings.ToLower(pass)
	rs := []rune(lower)
	distinct := map[rune]bool{}
	for _, r := range rs {
		distinct[r] = true
	}
	if len(distinct) < 6 {
		return weak(fmt.Sprintf("only %d different characters", len(distinct)))
	}
	steps := 0 // neighbours that repeat or count up or down: aaaa, 1234, cba
	for i := 1; i < len(rs); i++ {
		if d := rs[i] - rs[i-1]; d >= -1 && d <= 1 {
			steps++
		}
	}
	if 3*steps > 2*(len(rs)-1) {
		return weak("mostly a sequence or a repeat")
	}
	if n < 20 {
		for _, w := range commonWords {
			if strings.Contains(lower, w) {
				return weak("built around a common password")
			}
		}
	}
	if bits := estimateBits(pass); bits < minPassphraseBits {
		return weak(fmt.Sprintf("about %.0f bits, want %d", bits, minPassphraseBits))
	}
	return nil
}

// estimateBits is length × log2 of the size of the character classes used:
// generous to any one passphrase, but it catches short digit strings.
func estimateBits(pass string) float64 {
	var lower, upper, digit, space, symbol, other bool
	for _, r := range pass {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		case r == ' ':
			space = true
		case r < 0x80 && unicode.IsPrint(r):
			symbol = true
		default:
			other = true
		}
	}
	pool := 0
	for _, c := range []struct {
		on   bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {space, 1}, {symbol, 33}, {other, 100}} {
		if c.on {
			pool += c.size
		}
	}
	return float64(utf8.RuneCountInString(pass)) * math.Log2(float64(max(pool, 2)))
}
