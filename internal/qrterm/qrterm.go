// Package qrterm draws QR codes in a terminal with Unicode half blocks, two
// modules per character cell, so a pairing code fits on a laptop screen.
package qrterm

import (
	"fmt"
	"io"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// Write renders data as a QR code (dark modules drawn light-on-dark inverted
// so it scans on both dark and light terminal themes, with a quiet zone).
func Write(w io.Writer, data string) error {
	q, err := qrcode.New(data, qrcode.Low)
	if err != nil {
		return fmt.Errorf("qr code: %w", err)
	}
	bits := q.Bitmap() // includes the quiet zone; true = dark
	var b strings.Builder
	for y := 0; y < len(bits); y += 2 {
		for x := range bits[y] {
			top := bits[y][x]
			bottom := y+1 < len(bits) && bits[y+1][x]
			// Draw light modules as ink: terminals are usually dark, and
			// an inverted code scans fine with phone readers.
			switch {
			case !top && !bottom:
				b.WriteRune('█')
			case !top && bottom:
				b.WriteRune('▀')
			case top && !bottom:
				b.WriteRune('▄')
			default:
				b.WriteRune(' ')
			}
		}
		b.WriteByte('\n')
	}
	_, err = io.WriteString(w, b.String())
	return err
}
