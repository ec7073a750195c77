// Package loadmeter says how busy the machine was while a benchmark phase
// ran: the load average, and the CPU time spent by processes outside the
// benchmark's own process tree (other people's builds on a shared machine).
// A same-run ratio taken while others kept the cores busy is printed with
// that figure next to it, so a reader can tell a slow bridge from a busy
// machine. Linux only (/proc); elsewhere the figures read as unknown.
package loadmeter

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times; 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// Sample is one reading of the machine.
type Sample struct {
	At    time.Time
	Load1 float64 // 1-minute load average
	busy  int64   // all CPUs' non-idle ticks since boot
	ours  int64   // ticks of this process tree, exited children included
	ok    bool
}

// Take reads the machine now.
func Take() Sample {
	s := Sample{At: time.Now()}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 0 {
			s.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	busy, err := busyTicks()
	if err != nil {
		return s
	}
	s.busy, s.ours, s.ok = busy, treeTicks(os.Getpid()), true
	return s
}

// Span is what happened between two samples.
type Span struct {
	Seconds   float64 `json:"seconds"`
	LoadStart float64 `json:"load1_start"`
	LoadEnd   float64 `json:"load1_end"`
	OthersCPU float64 `json:"others_cpu_s"` // CPU seconds of processes outside our tree
	OursCPU   float64 `json:"ours_cpu_s"`   // CPU seconds of the benchmark and its children
	CPUs      int     `json:"cpus"`
	Known     bool    `json:"known"`
}

// Since measures from start until now.
func Since(start Sample) Span { return Between(start, Take()) }

// Between measures the span between two samples.
func Between(a, b Sample) Span {
	sp := Span{Seconds: b.At.Sub(a.At).Seconds(), LoadStart: a.Load1, LoadEnd: b.Load1, CPUs: runtime.NumCPU()}
	if !a.ok || !b.ok {
		return sp
	}
	busy := float64(b.busy-a.busy) / clockTicks
	sp.OursCPU = float64(b.ours-a.ours) / clockTicks
	sp.OthersCPU = max(0, busy-sp.OursCPU)
	sp.Known = true
	return sp
}

// OthersCores is the average number of cores other processes kept busy.
func (s Span) OthersCores() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return s.OthersCPU / s.Seconds
}

// Busy reports whether others used more than frac of the machine: figures
// taken then are distorted and should be repeated.
func (s Span) Busy(frac float64) bool {
	return s.Known && s.CPUs > 0 && s.OthersCores() > frac*float64(s.CPUs)
}

// String is the one-line form printed next to a figure.
func (s Span) String() string {
	if !s.Known {
		return fmt.Sprintf("load %.2f→%.2f (CPU use of other processes unknown)", s.LoadStart, s.LoadEnd)
	}
	return fmt.Sprintf("load %.2f→%.2f, other processes %.1f CPU-s in %.1fs (%.2f of %d cores), this run %.1f CPU-s",
		s.LoadStart, s.LoadEnd, s.OthersCPU, s.Seconds, s.OthersCores(), s.CPUs, s.OursCPU)
}

// busyTicks sums the non-idle CPU time of all CPUs from /proc/stat.
func busyTicks() (int64, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("loadmeter: unexpected /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadmeter: /proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice:
		// idle and iowait are not busy; guest time is already in user.
		switch i {
		case 3, 4, 8, 9:
			continue
		}
		busy += n
	}
	return busy, nil
}

// procStat is what treeTicks needs of /proc/PID/stat.
type procStat struct {
	ppid  int
	ticks int64 // utime+stime+cutime+cstime
}

func readProcStat(path string) (procStat, bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, false
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(raw[i+1:]))
	// f[0] is state (field 3); ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	var t int64
	for _, v := range f[11:15] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t += n
	}
	return procStat{ppid: ppid, ticks: t}, true
}

// treeTicks is the CPU time of root and all its descendants. Children that
// exited and were waited for are in their parent's cutime/cstime.
func treeTicks(root int) int64 {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	stats := make(map[int]procStat, len(paths))
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		if st, ok := readProcStat(p); ok {
			stats[pid] = st
		}
	}
	var total int64
	for pid, st := range stats {
		for p, hops := pid, 0; p > 1 && hops < 64; hops++ {
			if p == root {
				total += st.ticks
				break
			}
			p = stats[p].ppid
		}
	}
	return total
}

// ProcessCPU is the CPU time process pid has used so far (its waited-for
// children included), in seconds; ok is false if it cannot be read.
func ProcessCPU(pid int) (seconds float64, ok bool) {
	st, ok := readProcStat(fmt.Sprintf("/proc/%d/stat", pid))
	return float64(st.ticks) / clockTicks, ok
}
