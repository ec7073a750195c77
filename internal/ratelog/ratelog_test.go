package ratelog

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	clock := time.Unix(1000, 0)
	l := New(time.Minute, 3, 100)
	l.now = func() time.Time { return clock }
	allowed := 0
	for range 100 {
		if ok, _ := l.Allow("192.0.2.1"); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d of 100 lines allowed in one interval, want 3", allowed)
	}
	if ok, _ := l.Allow("192.0.2.2"); !ok {
		t.Fatal("another key was held back by the first one's flood")
	}
	clock = clock.Add(time.Minute)
	ok, suppressed := l.Allow("192.0.2.1")
	if !ok || suppressed != 97 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true and 97", ok, suppressed)
	}
}

func TestLimiterBoundsKeys(t *testing.T) {
	l := New(time.Minute, 1, 10)
	for i := range 1000 {
		l.Allow(fmt.Sprintf("198.51.100.%d", i))
	}
	if n := len(l.keys); n > 10 {
		t.Fatalf("%d keys remembered, limit 10", n)
	}
}
