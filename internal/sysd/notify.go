package sysd

import (
	"context"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// DefaultStatusEvery is how often Run refreshes the STATUS= line.
const DefaultStatusEvery = 30 * time.Second

// Notifier speaks sd_notify to the service manager (Type=notify). Without
// NOTIFY_SOCKET every method is a no-op.
type Notifier struct {
	// StatusEvery is how often Run recomputes the status line (sent when it
	// changed); 0 means DefaultStatusEvery.
	StatusEvery time.Duration

	log      zerolog.Logger
	socket   string
	watchdog time.Duration
	status   string // last STATUS= sent; touched by Ready, then only by Run
}

// NewNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.
func NewNotifier(log zerolog.Logger) *Notifier {
	n := &Notifier{log: log, socket: os.Getenv("NOTIFY_SOCKET")}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("Ignoring the systemd watchdog settings")
	}
	n.watchdog = wd
	return n
}

// Enabled says whether a service manager listens.
func (n *Notifier) Enabled() bool { return n.socket != "" }

// Watchdog is WatchdogSec= as systemd passed it (0: no watchdog).
func (n *Notifier) Watchdog() time.Duration { return n.watchdog }

func (n *Notifier) notify(state string) {
	if !n.Enabled() {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn().Err(err).Msg("sd_notify failed")
	}
}

// Starting sets the status shown while the daemon comes up.
func (n *Notifier) Starting(status string) { n.notify("STATUS=" + status) }

// Ready tells systemd the service is up (READY=1) with its first status.
func (n *Notifier) Ready(status string) {
	n.status = status
	n.notify(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// Status replaces the STATUS= line.
func (n *Notifier) Status(status string) { n.notify("STATUS=" + status) }

// Stopping tells systemd the shutdown has begun (STOPPING=1).
func (n *Notifier) Stopping() {
	n.notify(daemon.SdNotifyStopping + "\nSTATUS=Stopping")
}

// Run keeps systemd informed until ctx ends. It asks check for the status
// line every StatusEvery and, when a watchdog is configured, every half
// WatchdogSec=; a changed line is sent as STATUS=. A watchdog tick sends
// WATCHDOG=1 only when check answered within that half, so a daemon whose
// database or main loop hangs stops pinging and systemd restarts it. Call it
// after Ready.
func (n *Notifier) Run(ctx context.Context, check func(context.Context) (string, error)) {
	if !n.Enabled() {
		return
	}
	every := n.StatusEvery
	if every <= 0 {
		every = DefaultStatusEvery
	}
	statusT := time.NewTicker(every)
	defer statusT.Stop()
	var ping <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		ping = t.C
	}
	for {
		watchdog := false
		timeout := every
		select {
		case <-ctx.Done():
			return
		case <-ping:
			watchdog, timeout = true, n.watchdog/2
		case <-statusT.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		s, err := check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && watchdog:
			n.notify(daemon.SdNotifyWatchdog)
		case err != nil && watchdog:
			n.log.Warn().Err(err).Msg("Health check failed; not pinging the systemd watchdog")
		}
		if err != nil {
			s = "Degraded: " + err.Error()
		}
		if s != n.status {
			n.status = s
			n.Status(s)
		}
	}
}
