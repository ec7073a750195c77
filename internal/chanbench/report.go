package chanbench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Aims from the issue, checked on the delayed lossy condition (ratios) and
// on every condition (server cost, loss and doubles).
const (
	aimReconnectRatio = 0.5
	aimHOLRatio       = 0.5
	aimMediaRatio     = 0.8
	aimServerCost     = 2 * time.Millisecond
)

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/1e6)
}

func ratio(q, w float64) string {
	if q == 0 || w == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", q/w)
}

func dratio(q, w time.Duration) string { return ratio(float64(q), float64(w)) }

// Print writes one table per condition and the aims with PASS or MISS.
func Print(out io.Writer, conds []Condition) {
	for _, c := range conds {
		fmt.Fprintf(out, "\n== %s ==\n", c.Name)
		if c.Skipped != "" {
			fmt.Fprintf(out, "%s\n", c.Skipped)
			continue
		}
		if c.Impaired {
			fmt.Fprintf(out, "(nft dropped %d packets; delay-queue overflow %d)\n", c.Dropped, c.Overflow)
		}
		q, w := c.QUIC, c.WS
		row := func(name, a, b, r string) { fmt.Fprintf(out, "%-38s %16s %16s %8s\n", name, a, b, r) }
		row("figure", "QUIC", "WebSocket", "QUIC/WS")
		row(strings.Repeat("-", 38), strings.Repeat("-", 16), strings.Repeat("-", 16), strings.Repeat("-", 8))
		row("cold start -> 1st msg acked, p50", ms(q.Cold), ms(w.Cold), dratio(q.Cold, w.Cold))
		row("cold start -> 1st msg acked, max", ms(q.ColdMax), ms(w.ColdMax), dratio(q.ColdMax, w.ColdMax))
		row("reconnect -> 1st msg acked, p50", ms(q.Reconnect), ms(w.Reconnect), dratio(q.Reconnect, w.Reconnect))
		row("reconnect -> 1st msg acked, max", ms(q.ReconMax), ms(w.ReconMax), dratio(q.ReconMax, w.ReconMax))
		row("reconnects resumed (0-RTT)", fmt.Sprintf("%d/%d (%d)", q.Resumed, q.Trials, q.ZeroRTT),
			fmt.Sprintf("%d/%d (n/a)", w.Resumed, w.Trials), "")
		row("text RTT p50", ms(q.RTT50), ms(w.RTT50), dratio(q.RTT50, w.RTT50))
		row("text RTT p99", ms(q.RTT99), ms(w.RTT99), dratio(q.RTT99, w.RTT99))
		row("messages/s (pipelined)", fmt.Sprintf("%.0f", q.MsgsPerSec), fmt.Sprintf("%.0f", w.MsgsPerSec), ratio(q.MsgsPerSec, w.MsgsPerSec))
		row("server cost per message p50", ms(q.Cost50), ms(w.Cost50), dratio(q.Cost50, w.Cost50))
		row("server cost per message p99", ms(q.Cost99), ms(w.Cost99), dratio(q.Cost99, w.Cost99))
		if c.HOL {
			row("text RTT p50 during transfer", ms(q.HOL50), ms(w.HOL50), dratio(q.HOL50, w.HOL50))
			row("text RTT p99 during transfer (HOL)", ms(q.HOL99), ms(w.HOL99), dratio(q.HOL99, w.HOL99))
			media := func(f Figures) string {
				done := ""
				if f.MediaDone {
					done = " all"
				}
				return fmt.Sprintf("%d/%.1fMB%s", f.HOLPings, float64(f.MediaGot)/1e6, done)
			}
			row("  pings / MB received in window", media(q), media(w), "")
			row("  file MB/s received in window", fmt.Sprintf("%.2f", q.MediaRate), fmt.Sprintf("%.2f", w.MediaRate), ratio(q.MediaRate, w.MediaRate))
		}
		row("messages sent / lost / doubled", fmt.Sprintf("%d/%d/%d", q.Sent, q.Lost, q.Doubled),
			fmt.Sprintf("%d/%d/%d", w.Sent, w.Lost, w.Doubled), "")
		for _, f := range []struct {
			n string
			f Figures
		}{{"QUIC", q}, {"WebSocket", w}} {
			if f.f.Err != nil {
				fmt.Fprintf(out, "%s run stopped early: %v\n", f.n, f.f.Err)
			}
			busy := ""
			if f.f.Load.Busy(0.25) {
				busy = "  <- busy machine: figures distorted, repeat when idle"
			}
			fmt.Fprintf(out, "machine during %s: %s%s\n", f.n, f.f.Load, busy)
		}
	}
	fmt.Fprintf(out, "\n== aims ==\n")
	for _, a := range Aims(conds) {
		fmt.Fprintf(out, "%-5s %s\n", a.Verdict, a.Text)
	}
}

// Aim is one target from the issue and how this run did.
type Aim struct {
	Verdict string // PASS, MISS, or n/a
	Text    string
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// Aims evaluates the targets. The ratios are judged on the last
// condition (RTT plus loss), the others on every condition that ran.
func Aims(conds []Condition) []Aim {
	var aims []Aim
	var target *Condition
	if len(conds) > 0 {
		target = &conds[len(conds)-1]
	}
	if target == nil || target.Skipped != "" || target.QUIC.Err != nil || target.WS.Err != nil {
		aims = append(aims,
			Aim{"n/a", "QUIC reconnect-to-first-message <= 0.5x WebSocket under RTT+loss (condition did not complete)"},
			Aim{"n/a", "QUIC text p99 during transfer <= 0.5x WebSocket under RTT+loss (condition did not complete)"},
			Aim{"n/a", "QUIC file rate during transfer >= 0.8x TCP's under RTT+loss (condition did not complete)"})
	} else {
		q, w := target.QUIC, target.WS
		r := float64(q.Reconnect) / float64(w.Reconnect)
		aims = append(aims, Aim{verdict(r <= aimReconnectRatio), fmt.Sprintf(
			"QUIC reconnect-to-first-message <= %.1fx WebSocket (%s): %s vs %s = %.2fx",
			aimReconnectRatio, target.Name, ms(q.Reconnect), ms(w.Reconnect), r)})
		h := float64(q.HOL99) / float64(w.HOL99)
		aims = append(aims, Aim{verdict(q.HOL99 > 0 && h <= aimHOLRatio), fmt.Sprintf(
			"QUIC text p99 during transfer <= %.1fx WebSocket (%s): %s vs %s = %.2fx",
			aimHOLRatio, target.Name, ms(q.HOL99), ms(w.HOL99), h)})
		mr := 0.0
		if w.MediaRate > 0 {
			mr = q.MediaRate / w.MediaRate
		}
		aims = append(aims, Aim{verdict(mr >= aimMediaRatio), fmt.Sprintf(
			"QUIC file rate during transfer >= %.1fx TCP's (%s): %.2f vs %.2f MB/s (%.1f vs %.1f MB in the window) = %.2fx",
			aimMediaRatio, target.Name, q.MediaRate, w.MediaRate, float64(q.MediaGot)/1e6, float64(w.MediaGot)/1e6, mr)})
	}
	var worst time.Duration
	var worstWS time.Duration
	clean, ran, incomplete := true, 0, 0
	for _, c := range conds {
		if c.Skipped != "" {
			continue
		}
		ran++
		worst, worstWS = max(worst, c.QUIC.Cost50), max(worstWS, c.WS.Cost50)
		for _, f := range []Figures{c.QUIC, c.WS} {
			if f.Lost != 0 || f.Doubled != 0 || f.Sent == 0 {
				clean = false
			}
			if f.Err != nil {
				incomplete++
			}
		}
	}
	aims = append(aims, Aim{verdict(ran > 0 && worst > 0 && worst <= aimServerCost), fmt.Sprintf(
		"server-side cost per message <= %v p50 (QUIC, worst condition): %s (WebSocket: %s)", aimServerCost, ms(worst), ms(worstWS))})
	text := fmt.Sprintf("zero lost or doubled messages in every run (%d conditions x 2 transports)", ran)
	if incomplete > 0 {
		text += fmt.Sprintf("; %d runs stopped early", incomplete)
	}
	aims = append(aims, Aim{verdict(ran > 0 && clean && incomplete == 0), text})
	for _, c := range conds {
		if c.Skipped != "" {
			aims = append(aims, Aim{"n/a", c.Name + ": " + c.Skipped})
		}
	}
	return aims
}
