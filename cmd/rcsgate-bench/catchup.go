package main

// The catch-up benchmark (--catchup): what catch-up costs at start-up with
// many portals, against the same restart with catch-up off in the same run,
// and how long messages the homeserver never pushed take to reach the phone
// after a bridge restart and after a homeserver restart. A tap between the
// homeserver and rcsgate plays the homeserver that loses transactions.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
)

// CatchupPass is one "Catch-up pass done" line of rcsgate's log.
type CatchupPass struct {
	Reason    string  `json:"reason"`
	Round     int     `json:"round"`
	Rooms     int     `json:"rooms"`
	Seen      int     `json:"seen"`
	Missed    int     `json:"missed"`
	Delivered int     `json:"delivered"`
	Gaps      int     `json:"gaps"`
	Paged     int     `json:"paged"`
	Left      int     `json:"left_for_next_round"`
	TookMS    float64 `json:"took"`
	Init      bool    `json:"init"`
}

// CatchupRun is one measured restart.
type CatchupRun struct {
	What       string      `json:"what"`
	Missed     int         `json:"missed"`        // messages the tap swallowed before it
	ReadyS     float64     `json:"ready_s"`       // restart until rcsgate logs "ready" (bridge restarts)
	DeliveredS float64     `json:"delivered_s"`   // restart until the phone has sent every missed message
	Pass       CatchupPass `json:"pass"`          // the pass that ran
	PassTookS  float64     `json:"pass_took_s"`   // its own wall time
	RatioReady float64     `json:"ready_ratio"`   // ReadyS over the same restart with catch-up off
	ExtraPerPt float64     `json:"ms_per_portal"` // pass time per portal, ms
}

// CatchupReport is every figure of a --catchup run; also the JSON output.
type CatchupReport struct {
	StartedAt    time.Time    `json:"started_at"`
	Homeserver   string       `json:"homeserver"`
	Portals      int          `json:"portals"`
	Runs         []CatchupRun `json:"runs"`
	TotalSeconds float64      `json:"total_s"`
	Failures     []string     `json:"failures"`
	OK           bool         `json:"ok"`
}

func catchupMain(ctx context.Context, cfg Config, dir string) error {
	rep, err := runCatchup(ctx, cfg, dir)
	if err != nil {
		return err
	}
	rep.print(os.Stdout)
	if cfg.JSON != "" {
		if err := writeJSONFile(cfg.JSON, rep); err != nil {
			return err
		}
	}
	if !rep.OK {
		return fmt.Errorf("%s", strings.Join(rep.Failures, "; "))
	}
	return nil
}

func runCatchup(ctx context.Context, cfg Config, dir string) (*CatchupReport, error) {
	binDir, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	rep := &CatchupReport{StartedAt: time.Now().UTC().Truncate(time.Second), Portals: cfg.Portals, Failures: []string{}}
	started := time.Now()
	progress("catch-up: starting the homeserver, rcsgate (behind a transaction tap) and the simulated phone in %s", dir)
	st, err := harness.Up(ctx, harness.Options{Dir: dir, BinDir: binDir, TransactionTap: true})
	if err != nil {
		return nil, err
	}
	defer st.Down()
	rep.Homeserver = st.HS.Kind()
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	setup, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	mgmt, err := cli.OpenDM(setup, id.UserID(st.Info.BotUserID))
	if err != nil {
		return nil, err
	}
	var portals []id.RoomID
	for i := range cfg.Portals {
		room, _, err := cli.StartChat(setup, mgmt, fmt.Sprintf("+1202556%04d", i)) // quiet contacts
		if err != nil {
			return nil, fmt.Errorf("portal %d: %w", i, err)
		}
		portals = append(portals, room)
		if (i+1)%10 == 0 {
			progress("catch-up: %d/%d portals", i+1, cfg.Portals)
		}
	}

	restartBridge := func() (float64, error) {
		if err := st.StopGateway(syscall.SIGKILL); err != nil {
			return 0, err
		}
		t0 := time.Now()
		err := st.StartGateway(ctx)
		return time.Since(t0).Seconds(), err
	}
	setCatchup := func(on bool) error {
		c, err := gateway.LoadConfig(st.ConfigPath)
		if err != nil {
			return err
		}
		c.CatchUp.MaxAge = 0
		if !on {
			c.CatchUp.MaxAge = -time.Second
		}
		return c.Save(st.ConfigPath)
	}
	// lose sends count messages, spread over the portals, that the tap swallows.
	lose := func(count int, tag string) ([]string, error) {
		if err := st.DropTransactions(true); err != nil {
			return nil, err
		}
		var bodies []string
		var ids []id.EventID
		for i := range count {
			room := portals[i%len(portals)]
			body := fmt.Sprintf("%s %d %s", tag, i, nonce())
			resp, err := cli.SendText(ctx, room, body)
			if err != nil {
				return nil, err
			}
			bodies = append(bodies, body)
			ids = append(ids, resp.EventID)
		}
		deadline := time.Now().Add(time.Minute)
		for _, e := range ids {
			for !st.Dropped(e) {
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("the homeserver never pushed %s", e)
				}
				if !ctxutil.Sleep(ctx, 20*time.Millisecond) {
					return nil, ctx.Err()
				}
			}
		}
		return bodies, st.DropTransactions(false)
	}
	waitPhone := func(bodies []string, t0 time.Time) (float64, error) {
		want := map[string]bool{}
		for _, b := range bodies {
			want[b] = true
		}
		for {
			sent, err := st.SentEvents(ctx)
			if err == nil {
				n := 0
				for _, s := range sent {
					if want[s.Text] {
						n++
					}
				}
				if n >= len(want) {
					if n > len(want) {
						return 0, fmt.Errorf("the phone sent %d of %d messages: some twice", n, len(want))
					}
					return time.Since(t0).Seconds(), nil
				}
			}
			if time.Since(t0) > 5*time.Minute {
				return 0, fmt.Errorf("missed messages not on the phone after 5 minutes")
			}
			if !ctxutil.Sleep(ctx, 50*time.Millisecond) {
				return 0, ctx.Err()
			}
		}
	}

	// 1. Start-up with nothing missed: catch-up off, then on (same run).
	if err := setCatchup(false); err != nil {
		return nil, err
	}
	readyOff, err := restartBridge()
	if err != nil {
		return nil, err
	}
	if err := setCatchup(true); err != nil {
		return nil, err
	}
	offset := len(st.GatewayLog())
	readyOn, err := restartBridge()
	if err != nil {
		return nil, err
	}
	pass, err := waitPass(ctx, st, offset, "start")
	if err != nil {
		return nil, err
	}
	rep.Runs = append(rep.Runs, CatchupRun{What: "bridge restart, nothing missed, catch-up off", ReadyS: readyOff})
	rep.Runs = append(rep.Runs, CatchupRun{What: "first pass since the portals were made", ReadyS: readyOn, Pass: pass,
		PassTookS: pass.TookMS / 1000, RatioReady: readyOn / readyOff, ExtraPerPt: pass.TookMS / float64(cfg.Portals)})
	// The same again: what every later start costs.
	offset = len(st.GatewayLog())
	readyOn, err = restartBridge()
	if err != nil {
		return nil, err
	}
	if pass, err = waitPass(ctx, st, offset, "start"); err != nil {
		return nil, err
	}
	rep.Runs = append(rep.Runs, CatchupRun{What: "bridge restart, nothing missed", ReadyS: readyOn, Pass: pass,
		PassTookS: pass.TookMS / 1000, RatioReady: readyOn / readyOff, ExtraPerPt: pass.TookMS / float64(cfg.Portals)})

	// 2. Missed messages, bridge restart.
	bodies, err := lose(cfg.Missed, "lost before a bridge restart")
	if err != nil {
		return nil, err
	}
	offset = len(st.GatewayLog())
	t0 := time.Now()
	ready, err := restartBridge()
	if err != nil {
		return nil, err
	}
	delivered, err := waitPhone(bodies, t0)
	if err != nil {
		rep.Failures = append(rep.Failures, "bridge restart: "+err.Error())
	}
	pass, err = waitPass(ctx, st, offset, "start")
	if err != nil {
		return nil, err
	}
	rep.Runs = append(rep.Runs, CatchupRun{What: fmt.Sprintf("bridge restart, %d missed", len(bodies)), Missed: len(bodies),
		ReadyS: ready, DeliveredS: delivered, Pass: pass, PassTookS: pass.TookMS / 1000, RatioReady: ready / readyOff,
		ExtraPerPt: pass.TookMS / float64(cfg.Portals)})

	// 3. Missed messages, homeserver restart (the bridge stays up).
	bodies, err = lose(cfg.Missed, "lost before a homeserver restart")
	if err != nil {
		return nil, err
	}
	offset = len(st.GatewayLog())
	if err := st.KillHomeserver(); err != nil {
		return nil, err
	}
	t0 = time.Now()
	if err := st.StartHomeserver(ctx); err != nil {
		return nil, err
	}
	hsReady := time.Since(t0).Seconds()
	delivered, err = waitPhone(bodies, t0)
	if err != nil {
		rep.Failures = append(rep.Failures, "homeserver restart: "+err.Error())
	}
	pass, err = waitPass(ctx, st, offset, "homeserver back")
	if err != nil {
		return nil, err
	}
	rep.Runs = append(rep.Runs, CatchupRun{What: fmt.Sprintf("homeserver restart, %d missed", len(bodies)), Missed: len(bodies),
		ReadyS: hsReady, DeliveredS: delivered, Pass: pass, PassTookS: pass.TookMS / 1000, ExtraPerPt: pass.TookMS / float64(cfg.Portals)})

	rep.TotalSeconds = time.Since(started).Seconds()
	rep.OK = len(rep.Failures) == 0
	return rep, nil
}

// waitPass returns the first catch-up pass with reason logged after offset.
func waitPass(ctx context.Context, st *harness.Stack, offset int, reason string) (CatchupPass, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		log := st.GatewayLog()
		if offset <= len(log) {
			for _, line := range bytes.Split(log[offset:], []byte("\n")) {
				if !bytes.Contains(line, []byte("Catch-up pass done")) {
					continue
				}
				var p CatchupPass
				if json.Unmarshal(line, &p) == nil && p.Reason == reason {
					return p, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return CatchupPass{}, fmt.Errorf("no catch-up pass %q in rcsgate's log", reason)
		}
		if !ctxutil.Sleep(ctx, 50*time.Millisecond) {
			return CatchupPass{}, ctx.Err()
		}
	}
}

func (r *CatchupReport) print(w io.Writer) {
	fmt.Fprintf(w, "\ncatch-up on %s, %d portals (%s)\n\n", r.Homeserver, r.Portals, r.StartedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tready s\tvs off\tall missed on phone s\tpass: rooms seen missed delivered gaps paged\tpass took ms\tms/portal")
	for _, x := range r.Runs {
		ratio, deliv, pass := "", "", ""
		if x.RatioReady > 0 {
			ratio = fmt.Sprintf("%.2f×", x.RatioReady)
		}
		if x.DeliveredS > 0 {
			deliv = fmt.Sprintf("%.2f", x.DeliveredS)
		}
		if x.Pass.Reason != "" {
			pass = fmt.Sprintf("%d %d %d %d %d %d", x.Pass.Rooms, x.Pass.Seen, x.Pass.Missed, x.Pass.Delivered, x.Pass.Gaps, x.Pass.Paged)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\t%.0f\t%.2f\n", x.What, x.ReadyS, ratio, deliv, pass, x.Pass.TookMS, x.ExtraPerPt)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntotal %.0f s; %s\n", r.TotalSeconds, map[bool]string{true: "OK", false: "FAILED: " + strings.Join(r.Failures, "; ")}[r.OK])
}
