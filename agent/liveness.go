package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// Dead-server detection. QUIC only notices a vanished server when its idle
// timeout fires (45–60 s), so the agent watches the server's own pings
// (internal/devicechan pings every 5 s) and measures the silence since the
// last frame from the server:
//
//   - once a ping is a quarter interval late it pings the server itself,
//     again every ProbeInterval while the silence lasts (a few bytes each,
//     and only while the server is silent): a live server answers at once,
//     and a restarted one answers the old connection with a stateless reset
//     (its reset key is derived from the channel key), which ends the
//     connection within one round trip of the server being back;
//   - after 3 ping intervals it also runs the version-negotiation prober
//     (probe.go): when the server answers a probe while the connection is
//     still silent, the old connection is stuck behind retransmission timers
//     that grew during the outage, so the agent abandons it and redials at
//     once (0-RTT when it holds a ticket).
//
// The watch arms at the first ping from the server: a server that never
// pings (an older build) is left to QUIC's idle timeout as before. The
// interval is learnt from the pings' own timestamps, so the bounds follow
// the server's setting without a protocol change.
const (
	suspectPings  = 1.25            // silence, in ping intervals, before we ping the server
	deadPings     = 3               // silence, in ping intervals, before we probe and redial
	pingGuess     = 5 * time.Second // interval assumed until two pings were seen
	minPingGap    = 10 * time.Millisecond
	maxPingGap    = 60 * time.Second
	minSuspicious = 20 * time.Millisecond
)

// errServerSilent ends a connection the server stopped talking on while it
// answers probes again: Run redials at once.
var errServerSilent = errors.New("server went silent on this connection but answers again; redialing")

// liveness tracks the silence of the server on one connection.
type liveness struct {
	armed  chan struct{} // closed at the first ping from the server
	learnt chan struct{} // signalled when the interval changes
	busy   atomic.Bool   // our reader is stalled handing a frame on: not the server's silence

	mu       sync.Mutex
	last     time.Time     // last frame from the server, or end of a reader stall
	lastPing int64         // server clock (ms) of its last ping; 0 before the first
	interval time.Duration // learnt ping interval
}

func newLiveness(now time.Time) *liveness {
	return &liveness{armed: make(chan struct{}), learnt: make(chan struct{}, 1), last: now}
}

// frame records a frame from the server at now.
func (l *liveness) frame(now time.Time) {
	l.mu.Lock()
	l.last = now
	l.mu.Unlock()
}

// ping records a server ping (its clock in ms) and learns the interval.
func (l *liveness) ping(now time.Time, tsMS int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = now
	first := l.lastPing == 0
	if !first && tsMS > l.lastPing {
		iv := min(max(time.Duration(tsMS-l.lastPing)*time.Millisecond, minPingGap), maxPingGap)
		if iv != l.interval {
			l.interval = iv
			select {
			case l.learnt <- struct{}{}:
			default:
			}
		}
	}
	if tsMS > l.lastPing {
		l.lastPing = tsMS
	}
	if first {
		if l.interval == 0 {
			l.interval = pingGuess
		}
		close(l.armed)
	}
}

// bounds returns the silence so far and the suspect and dead bounds, with
// fixed (Config.Liveness > 0) overriding the learnt interval.
func (l *liveness) bounds(now time.Time, fixed time.Duration) (silence, suspect, dead time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy.Load() {
		l.last = now
	}
	dead = time.Duration(float64(l.interval) * deadPings)
	if fixed > 0 {
		dead = fixed
	}
	suspect = max(time.Duration(float64(dead)*suspectPings/deadPings), minSuspicious)
	return now.Sub(l.last), suspect, dead
}

// watchLiveness is a session loop: it pings a silent server and, once it
// has been silent for the dead bound, probes it and ends the session with
// errServerSilent as soon as it answers.
func (s *session) watchLiveness(ctx context.Context) error {
	l, fixed := s.live, s.a.cfg.Liveness
	if fixed < 0 {
		<-ctx.Done()
		return context.Cause(ctx)
	}
	select {
	case <-l.armed:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	every := s.a.cfg.ProbeInterval // pings and probes while the server is silent
	if every <= 0 {
		every = DefaultProbeInterval
	}
	var pr *prober
	defer func() { pr.stop() }()
	var pingedAt time.Time
	var pinging atomic.Bool
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		case <-l.learnt: // the bounds moved
		case <-pr.answered():
		}
		now := time.Now()
		silence, suspect, dead := l.bounds(now, fixed)
		if silence < suspect {
			if pr != nil {
				pr.stop()
				pr = nil
			}
			timer.Reset(suspect - silence)
			continue
		}
		if pr != nil && pr.hasAnswered() && silence >= dead {
			s.log.Warn().Dur("silent", silence).Msg("server silent on this connection but answering probes: redialing")
			return errServerSilent
		}
		if now.Sub(pingedAt) >= every && pinging.CompareAndSwap(false, true) {
			pingedAt = now
			go func() { // never block this loop behind a stalled stream
				defer pinging.Store(false)
				_ = s.write(wire.Ping{Nonce: uint64(now.UnixNano()), TSMS: now.UnixMilli()})
			}()
			s.log.Debug().Dur("silent", silence).Msg("server silent: pinging it")
		}
		if silence >= dead && pr == nil && s.a.cfg.ProbeInterval > 0 {
			pr = startProber(ctx, []string{s.cc.addr}, s.a.cfg.ProbeInterval, s.log)
		}
		next := every - now.Sub(pingedAt)
		if silence < dead {
			next = min(next, dead-silence)
		}
		timer.Reset(max(next, time.Millisecond))
	}
}
