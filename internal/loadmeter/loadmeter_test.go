package loadmeter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadProcStat(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, line string
		ok         bool
		ppid       int
		ticks      int64
	}{
		// utime=11 stime=22 cutime=33 cstime=44
		{"plain", "42 (dendrite) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 9 0 1 2 3", true, 7, 110},
		{"name with spaces and parens", "42 (a b) (c)) R 9 42 42 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 1 2 3", true, 9, 10},
		{"truncated", "42 (x) S 7 42", false, 0, 0},
		{"no name", "garbage", false, 0, 0},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
		if err := os.WriteFile(p, []byte(tc.line), 0o600); err != nil {
			t.Fatal(err)
		}
		st, ok := readProcStat(p)
		if ok != tc.ok || st.ppid != tc.ppid || st.ticks != tc.ticks {
			t.Errorf("%s: got %+v %v, want ppid %d ticks %d ok %v", tc.name, st, ok, tc.ppid, tc.ticks, tc.ok)
		}
	}
}

func TestBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := Sample{At: t0, Load1: 0.5, busy: 1000, ours: 100, ok: true}
	b := Sample{At: t0.Add(10 * time.Second), Load1: 1.5, busy: 2500, ours: 600, ok: true}
	sp := Between(a, b)
	if !sp.Known || sp.Seconds != 10 || sp.OursCPU != 5 || sp.OthersCPU != 10 {
		t.Fatalf("span %+v: want 10 s, ours 5 CPU-s, others 10 CPU-s", sp)
	}
	if got := sp.OthersCores(); got != 1 {
		t.Fatalf("others use %.2f cores, want 1", got)
	}
	sp.CPUs = 2
	if !sp.Busy(0.25) || sp.Busy(0.5) {
		t.Fatalf("one of two cores busy: Busy(0.25) must hold, Busy(0.5) must not")
	}
	if s := Between(a, Sample{At: t0.Add(time.Second)}); s.Known {
		t.Fatal("a failed reading must make the span unknown")
	}
}

// This process's own CPU time shows up as ours, not as others'.
func TestTakeCountsOwnTree(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc")
	}
	start := Take()
	own, ok := ProcessCPU(os.Getpid())
	if !ok {
		t.Fatal("ProcessCPU cannot read this process")
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x // burn CPU: this is what must be counted
	}
	sp := Since(start)
	if !sp.Known || sp.OursCPU < 0.1 {
		t.Fatalf("span %+v: 0.3 s of busy loop must count as at least 0.1 CPU-s of ours", sp)
	}
	if after, _ := ProcessCPU(os.Getpid()); after-own < 0.1 {
		t.Fatalf("ProcessCPU grew by %.2f s over 0.3 s of busy loop", after-own)
	}
	if !strings.Contains(sp.String(), "other processes") {
		t.Fatalf("String() = %q", sp.String())
	}
}
