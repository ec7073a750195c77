package connector

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// Within a room's window each event is handled by one path only; outside
// any window nothing is tracked; windows and reminders stay bounded.
func TestEarlyRoomsClaim(t *testing.T) {
	var e earlyRooms
	if !e.claim("!other", "$a") || !e.claim("!other", "$a") {
		t.Fatal("outside a window every claim must succeed (nothing to race with)")
	}
	e.open("!dm")
	if !e.claim("!dm", "$1") {
		t.Fatal("first claim in a window refused")
	}
	if e.claim("!dm", "$1") {
		t.Fatal("second claim of the same event succeeded: it would be handled twice")
	}
	if !e.claim("!dm", "$2") {
		t.Fatal("another event refused")
	}
	e.rooms["!dm"].until = time.Now().Add(-time.Second)
	if !e.claim("!dm", "$1") {
		t.Fatal("an expired window still refuses")
	}
	for i := range maxEarlyRooms + 10 {
		e.open(id.RoomID(fmt.Sprintf("!r%d", i)))
	}
	if len(e.rooms) > maxEarlyRooms {
		t.Fatalf("%d windows open, want at most %d", len(e.rooms), maxEarlyRooms)
	}
	if !e.once("!dm", "@u:x", time.Hour) || e.once("!dm", "@u:x", time.Hour) || !e.once("!dm", "@v:x", time.Hour) {
		t.Fatal("once: first time yes, again no, another person yes")
	}
}
