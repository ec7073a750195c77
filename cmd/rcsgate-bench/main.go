// Command rcsgate-bench measures rcsgate on loopback in one run: the round
// trip through the bridge to the simulator's echo contact and where its time
// goes hop by hop, the same round trip between two plain Matrix users on the
// same homeserver as a baseline, and the sustained rate both ways. Every
// phase is printed with the machine's load. `make bench` runs it.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/loadmeter"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Config is what the flags select.
type Config struct {
	Bin      string
	State    string
	Keep     bool
	Quick    bool
	JSON     string
	N        int
	Warmup   int
	Duration time.Duration
	Window   int
	Limit    int
	// --media: one large file each way instead of the message benchmark.
	Media bool
	// --phone-app: the round trip through the phone app's path next to the sim's.
	PhoneApp  bool
	MediaSize int64
	// MediaRounds: how many times --media runs its three legs.
	MediaRounds int
	RSSLimit    int64
	// CPUProfile: --media writes CPU profiles per leg into this directory.
	CPUProfile string
	// SentStatus is rcsgate's bridge.sent_status ("" keeps the default).
	SentStatus string
	// --catchup: what catch-up costs and how fast it delivers.
	Catchup bool
	Portals int
	Missed  int
}

const minN = 200

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("rcsgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Bin, "bin", "bin", "directory holding rcsgate, rcsgate-agent and dendrite (`make build tools`)")
	fs.StringVar(&c.State, "state", "", "directory for the deployment's state and logs; must be empty or absent (default: a temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the state directory (logs: rcsgate.log, agent.log, dendrite/) after the run")
	fs.BoolVar(&c.Quick, "quick", false, "a short smoke run: allows --n below 200; defaults --n 30 --warmup 3 --duration 5s")
	fs.StringVar(&c.JSON, "json", "", "also write the figures as JSON to `FILE`")
	fs.IntVar(&c.N, "n", minN, "timed round trips per path (at least 200 unless --quick)")
	fs.IntVar(&c.Warmup, "warmup", 10, "untimed round trips before each measurement")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "how long the throughput phase sends")
	fs.IntVar(&c.Window, "window", 32, "messages in flight during the throughput phase")
	fs.IntVar(&c.Limit, "max-messages", 100000, "hard cap on messages sent in the throughput phase")
	fs.BoolVar(&c.PhoneApp, "phone-app", false, "instead: the round trip through the phone app's path (agent/android's Java side, agent over stdio) next to the sim backend's, in one run")
	fs.StringVar(&c.SentStatus, "sent-status", "", "rcsgate's bridge.sent_status for the run: when_pending (the default) or always")
	fs.BoolVar(&c.Media, "media", false, "instead: time and peak RSS of the bridge while a large file goes phone -> Matrix and Matrix -> phone")
	fs.Int64Var(&c.MediaSize, "media-size", wire.MaxMediaSize, "--media: file size in bytes (at most the phone limit)")
	fs.IntVar(&c.MediaRounds, "rounds", 3, "--media: rounds of the three transfers (medians are compared)")
	fs.Int64Var(&c.RSSLimit, "rss-limit", 64<<20, "--media: rcsgate's peak RSS must stay below this many bytes")
	fs.BoolVar(&c.Catchup, "catchup", false, "instead: catch-up's start-up cost with many portals (against catch-up off) and how fast messages the homeserver never pushed reach the phone")
	fs.IntVar(&c.Portals, "portals", 50, "--catchup: portals to create")
	fs.IntVar(&c.Missed, "missed", 100, "--catchup: messages the homeserver 'loses' before each restart, spread over the portals")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "--media: write CPU profiles of rcsgate, the agent and the bench, one per leg, into `DIR` (go tool pprof)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rcsgate-bench [flags]\n\nMeasures the bridge round trip against plain Matrix and the sustained rate, on loopback.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			c.N = 30
		}
		if !set["warmup"] {
			c.Warmup = 3
		}
		if !set["duration"] {
			c.Duration = 5 * time.Second
		}
	}
	switch {
	case c.N < 1:
		return c, errors.New("--n must be positive")
	case c.N < minN && !c.Quick:
		return c, fmt.Errorf("--n %d is too few for a p99; use at least %d, or --quick for a smoke run", c.N, minN)
	case c.Warmup < 0:
		return c, errors.New("--warmup must not be negative")
	case c.Duration <= 0:
		return c, errors.New("--duration must be positive")
	case c.Window < 1:
		return c, errors.New("--window must be at least 1")
	case c.Limit < 1:
		return c, errors.New("--max-messages must be at least 1")
	case c.MediaRounds < 1 || c.MediaRounds > 20:
		return c, errors.New("--rounds must be between 1 and 20")
	case c.MediaSize < 1 || c.MediaSize > wire.MaxMediaSize:
		return c, fmt.Errorf("--media-size must be between 1 and %d", wire.MaxMediaSize)
	case c.RSSLimit < 1:
		return c, errors.New("--rss-limit must be positive")
	case c.SentStatus != "" && c.SentStatus != "always" && c.SentStatus != "when_pending":
		return c, fmt.Errorf("--sent-status %q: want always or when_pending", c.SentStatus)
	case c.Portals < 1 || c.Portals > 1000:
		return c, errors.New("--portals must be between 1 and 1000")
	case c.Missed < 1 || c.Missed > 10000:
		return c, errors.New("--missed must be between 1 and 10000")
	case c.Media && c.Catchup:
		return c, errors.New("--media and --catchup are separate runs")
	}
	return c, nil
}

func main() { os.Exit(run()) }

func run() int {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := prepareState(cfg.State)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-bench:", err)
		return 1
	}
	var rep *Report
	if cfg.PhoneApp {
		var pr *PhoneAppReport
		if pr, err = phoneAppBench(ctx, cfg, dir); err == nil {
			pr.print(os.Stdout)
			if cfg.JSON != "" {
				err = writeJSONFile(cfg.JSON, pr)
			}
		}
	} else if cfg.Media {
		err = mediaMain(ctx, cfg, dir)
	} else if cfg.Catchup {
		err = catchupMain(ctx, cfg, dir)
	} else {
		rep, err = bench(ctx, cfg, dir)
	}
	if err == nil && rep != nil {
		rep.print(os.Stdout)
		if cfg.JSON != "" {
			err = rep.writeJSON(cfg.JSON)
		}
		if err == nil && len(rep.Failures) > 0 {
			err = fmt.Errorf("%d check(s) failed: %v", len(rep.Failures), rep.Failures)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-bench: FAILED:", err)
		if entries, _ := os.ReadDir(dir); len(entries) == 0 {
			_ = os.Remove(dir)
		} else {
			fmt.Fprintf(os.Stderr, "rcsgate-bench: state and logs kept in %s (rcsgate.log, agent.log, dendrite/)\n", dir)
		}
		return 1
	}
	if cfg.Keep {
		progress("state and logs kept in %s", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-bench: removing state:", err)
	}
	return 0
}

// prepareState returns an absolute, empty state directory.
func prepareState(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "rcsgate-bench-")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("--state %s is not empty; a benchmark needs a fresh deployment", abs)
	}
	return abs, os.MkdirAll(abs, 0o700)
}

// bench brings up the deployment and runs the four phases: round trips
// through the bridge and between two plain users, then sustained traffic
// the same two ways. Each phase is measured with the machine's load.
func bench(ctx context.Context, cfg Config, dir string) (*Report, error) {
	// The throughput phase sends from many goroutines over one client: keep
	// their connections alive instead of redialling on every request.
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 2 * cfg.Window
	}
	binDir, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	rep := newReport(cfg)
	started := time.Now()

	traceDir, err := traceHops(dir)
	if err != nil {
		return nil, err
	}
	progress("starting the homeserver, rcsgate and the simulated phone in %s", dir)
	st, err := harness.Up(ctx, harness.Options{Dir: dir, BinDir: binDir, Configure: func(c *gateway.Config) {
		c.Bridge.SentStatus = cfg.SentStatus
	}})
	if err != nil {
		return nil, err
	}
	defer st.Down()
	rep.Homeserver = st.HS.Kind()
	rep.SentStatus = cmp.Or(cfg.SentStatus, "when_pending")
	a, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		return nil, err
	}
	defer a.Close()

	setup, cancel := context.WithTimeout(ctx, time.Minute)
	mgmt, err := a.OpenDM(setup, id.UserID(st.Info.BotUserID))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bridge: DM with the bot: %w", err)
	}
	portal, ghost, err := a.StartChat(setup, mgmt, harness.EchoNumber)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("bridge: start-chat: %w", err)
	}
	peer, err := startEchoPeer(ctx, st, a)
	if err != nil {
		return nil, err
	}
	defer peer.stop()
	progress("bridge: portal %s, ghost %s; baseline: room %s with %s", portal, ghost, peer.room, peer.id)

	// 1. Round trips through the bridge and between the two plain users,
	// taken in turn so the machine's load falls on both alike.
	bridgePath := rttPath{label: "bridge", ctx: ctx, cli: a, room: portal, peer: ghost}
	basePath := rttPath{label: "baseline", ctx: peer.ctx, cli: a, room: peer.room, peer: peer.id}
	load := loadmeter.Take()
	progress("round trips: %d warm-up + %d on each path, interleaved (%s)", cfg.Warmup, cfg.N, loadNow())
	trips, err := interleavedRoundTrips([]rttPath{bridgePath, basePath}, cfg.Warmup, cfg.N)
	if err := peer.failed(err); err != nil {
		return nil, err
	}
	rep.Load.RoundTrips = loadmeter.Since(load)

	// 2. Sustained traffic both ways, in alternating slices for the same
	// reason.
	load = loadmeter.Take()
	slice := cfg.Duration / floodSlices
	progress("throughput: window %d, %d slices of %s on each path, alternating (%s)", cfg.Window, floodSlices, slice, loadNow())
	var fr, bfr FloodResult
	for i := range floodSlices {
		r, err := flood(ctx, a, portal, ghost, slice, cfg.Window, cfg.Limit)
		if err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		fr.merge(r, i == 0)
		r, err = flood(peer.ctx, a, peer.room, peer.id, slice, cfg.Window, cfg.Limit)
		if err := peer.failed(err); err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		bfr.merge(r, i == 0)
		progress("throughput: slice %d: bridge %d echoed, baseline %d echoed (%s)", i+1, fr.Echoed, bfr.Echoed, loadNow())
	}
	rep.Load.Throughput = loadmeter.Since(load)

	trace, err := hoptrace.Read(traceDir)
	if err != nil {
		return nil, fmt.Errorf("reading the hop trace: %w", err)
	}
	if err := rep.fill(trips[0], trips[1], fr, bfr, trace); err != nil {
		return nil, err
	}
	rep.TotalSeconds = time.Since(started).Seconds()
	return rep, nil
}

// traceHops makes rcsgate and the agent started after it mark each hop of a
// message into a directory under dir (they inherit the variable); the
// breakdown reads it at the end.
func traceHops(dir string) (string, error) {
	traceDir := filepath.Join(dir, "hoptrace")
	if err := os.MkdirAll(traceDir, 0o700); err != nil {
		return "", err
	}
	return traceDir, os.Setenv(hoptrace.EnvVar, traceDir)
}

// echoPeer is the baseline's second plain user: it answers every message
// of the first in their shared room with the same body, in order.
type echoPeer struct {
	id   id.UserID
	room id.RoomID
	ctx  context.Context // ends when the echo loop fails
	stop func()
}

func startEchoPeer(ctx context.Context, st *harness.Stack, a *harness.Client) (*echoPeer, error) {
	pw := "echo-" + nonce()
	bID, err := st.HS.RegisterUser(ctx, "bench-echo", pw, false)
	if err != nil {
		return nil, fmt.Errorf("baseline: register the echo user: %w", err)
	}
	b, err := harness.Login(ctx, st.Info.Homeserver, bID, pw)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	setup, cancel := context.WithTimeout(ctx, time.Minute)
	room, err := a.OpenDM(setup, id.UserID(bID))
	cancel()
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("baseline: %w", err)
	}
	ectx, stopEcho := context.WithCancelCause(ctx)
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		if err := echoLoop(ectx, b, room, a.UserID); err != nil {
			stopEcho(err) // fails the waiting sender at once
		}
	}()
	return &echoPeer{id: id.UserID(bID), room: room, ctx: ectx, stop: func() {
		stopEcho(nil)
		<-echoDone
		b.Close()
	}}, nil
}

// failed prefers the echo loop's own error to the sender's.
func (p *echoPeer) failed(err error) error {
	if cause := context.Cause(p.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("baseline echo user: %w", cause)
	}
	return err
}

// loadNow is the load average, for progress lines.
func loadNow() string { return fmt.Sprintf("load %.2f", loadmeter.Take().Load1) }

var progressStart = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "rcsgate-bench [%6.1fs] %s\n", time.Since(progressStart).Seconds(), fmt.Sprintf(format, args...))
}

func nonce() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
