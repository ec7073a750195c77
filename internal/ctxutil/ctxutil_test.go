package ctxutil

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if !Sleep(t.Context(), time.Millisecond) {
		t.Fatal("a short sleep was cut short")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("a cancelled context did not cut the sleep short")
	}
}

// Each wait doubles the next, up to Max; a cancelled context cuts one short.
func TestDoubling(t *testing.T) {
	d := Doubling{Next: time.Microsecond, Max: 5 * time.Microsecond}
	var got []time.Duration
	for i := 0; i < 4; i++ {
		got = append(got, d.Next)
		if !d.Wait(t.Context()) {
			t.Fatal("a short wait was cut short")
		}
	}
	want := []time.Duration{time.Microsecond, 2 * time.Microsecond, 4 * time.Microsecond, 5 * time.Microsecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pauses %v, want %v", got, want)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if (&Doubling{Next: time.Hour, Max: time.Hour}).Wait(ctx) {
		t.Fatal("a cancelled context did not cut the wait short")
	}
}
