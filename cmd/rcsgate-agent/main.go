// Command rcsgate-agent runs on the user's Android phone: it pairs with an
// rcsgate server and relays messages between the server and the phone's
// messaging stack. It never imports Matrix or cgo, so
// CGO_ENABLED=0 GOOS=android GOARCH=arm64 go build ./cmd/rcsgate-agent works.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/atomicfile"
	"github.com/rcsgate/rcsgate/internal/cliflag"
	"github.com/rcsgate/rcsgate/internal/cpuprof"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// version is reported in Hello; set with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const stateEnv = "RCSGATE_AGENT_STATE"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	cpuprof.Stop() // RCSGATE_CPUPROFILE: the last profile is written out
	os.Exit(code)
}

const topUsage = `rcsgate-agent relays RCS/SMS between this phone and an rcsgate server.

Usage:
  rcsgate-agent pair [--state DIR] [--name NAME] [--force] [--dns IP,...] LINK
  rcsgate-agent run  [--state DIR] [--backend sim] [--control 127.0.0.1:0] [--dns IP,...]
  rcsgate-agent sim inject [--state DIR] [--control ADDR] --from NUMBER --text TEXT
  rcsgate-agent status [--state DIR]
  rcsgate-agent id   [--state DIR]
  rcsgate-agent version

Exit codes: 0 ok, 1 error, 2 usage, 3 unpaired (the server refused this
device's certificate: pair again with "rcsgate-agent pair --force LINK").

The state directory defaults to $` + stateEnv + ` or ./agent-state.
Run "rcsgate-agent COMMAND -h" for the options of a command.
`

// usageError is a mistake in how the command was called: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errUsagePrinted: the flag package already printed the problem and usage.
var errUsagePrinted = errors.New("usage")

// exitUnpaired is the exit code for agent.ErrUnpaired: a supervisor (or the
// phone app) should not restart the agent, but ask its person to pair again.
const exitUnpaired = 3

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	var err error
	cmd := args[0]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return 0
	case "version":
		fmt.Fprintln(stdout, "rcsgate-agent", version)
		return 0
	case "pair":
		err = cmdPair(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdin, stdout, stderr)
	case "id":
		err = cmdID(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "sim":
		if len(args) < 2 || args[1] != "inject" {
			err = usageError{`sim needs a subcommand: "sim inject"`}
		} else {
			cmd = "sim inject"
			err = cmdSimInject(ctx, args[2:], stdout, stderr)
		}
	default:
		fmt.Fprintf(stderr, "rcsgate-agent: unknown command %q\n\n%s", cmd, topUsage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsagePrinted):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "rcsgate-agent %s: %s (see rcsgate-agent %s -h)\n", cmd, ue.msg, cmd)
		return 2
	case errors.Is(err, agent.ErrUnpaired):
		fmt.Fprintf(stderr, "rcsgate-agent %s: %s\n", cmd, oneLine(err.Error()))
		return exitUnpaired
	default:
		fmt.Fprintf(stderr, "rcsgate-agent %s: %s\n", cmd, oneLine(err.Error()))
		return 1
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func defaultStateDir() string {
	if d := os.Getenv(stateEnv); d != "" {
		return d
	}
	return "agent-state"
}

func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rcsgate-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rcsgate-agent %s\n\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := cliflag.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	} else if err != nil {
		return nil, errUsagePrinted
	}
	return pos, nil
}

func newLogger(stderr io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, usageError{fmt.Sprintf("unknown log level %q (use debug, info, warn or error)", level)}
	}
	return zerolog.New(redact.Writer{W: stderr}).Level(lvl).With().Timestamp().Logger(), nil
}

func cmdPair(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pair", "pair [--state DIR] [--name NAME] [--force] LINK\n\n"+
		"Pairs this device with the server named by LINK (rcsgate://pair?addr=...&token=...&pin=...,\n"+
		"as printed by the server). The device key is made here and never leaves this device.", stderr)
	state := fs.String("state", defaultStateDir(), "state directory (overrides $"+stateEnv+")")
	host, _ := os.Hostname()
	name := fs.String("name", host, "name shown for this device on the server")
	force := fs.Bool("force", false, "replace an identity already in the state directory")
	dns := fs.String("dns", "", dnsUsage)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"want exactly one pairing link"}
	}
	link, err := wire.ParsePairLink(pos[0])
	if err != nil {
		return err
	}
	if _, err := useDNS(*dns, false); err != nil {
		return err
	}
	id, err := agent.Pair(ctx, link, *state, agent.PairOptions{Name: *name, Force: *force})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(*state)
	fmt.Fprintf(stdout, "paired: device id %s\nidentity stored in %s (%s stays on this device)\n", id, abs, agent.KeyFile)
	return nil
}

const dnsUsage = "DNS servers to resolve the server's name with (IP addresses, comma-separated);\n" +
	"needed on Android, where the agent has no resolver configuration"

// useDNS installs a resolver for the process when servers are given or
// may come later (a hosted backend's network lines); nil otherwise.
func useDNS(list string, always bool) (*agent.Resolver, error) {
	if list == "" && !always {
		return nil, nil
	}
	r := &agent.Resolver{}
	if list != "" {
		if err := r.SetServers([]string{list}); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	r.Install()
	return r, nil
}

// stateOnly parses the arguments of a command that takes only --state.
func stateOnly(name, usage string, args []string, stderr io.Writer) (string, error) {
	fs := newFlagSet(name, usage, stderr)
	state := fs.String("state", defaultStateDir(), "state directory (overrides $"+stateEnv+")")
	pos, err := parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 0 {
		return "", usageError{"takes no arguments"}
	}
	return *state, nil
}

func cmdID(args []string, stdout, stderr io.Writer) error {
	state, err := stateOnly("id", "id [--state DIR]\n\nPrints this device's id.", args, stderr)
	if err != nil {
		return err
	}
	id, err := agent.LoadDeviceID(state)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

// cmdStatus says what the state directory holds, without the network:
// paired (and with which server), unpaired (refused by the server), or
// not paired yet.
func cmdStatus(args []string, stdout, stderr io.Writer) error {
	state, err := stateOnly("status", "status [--state DIR]\n\nSays whether this device is paired, and with which server.\n"+
		"Exit code 3: the server refused this device's certificate (unpaired — pair again).", args, stderr)
	if err != nil {
		return err
	}
	id, err := agent.LoadIdentity(state)
	if err != nil {
		return err
	}
	if u, ok := agent.LoadUnpaired(state); ok {
		fmt.Fprintf(stdout, "unpaired — pair again\ndevice %s was refused by the server on %s: %s\nrun: rcsgate-agent pair --force --state %s LINK\n",
			id.DeviceID, u.At.Format(time.RFC3339), u.Reason, state)
		return fmt.Errorf("%w: device %s", agent.ErrUnpaired, id.DeviceID.Short())
	}
	fmt.Fprintf(stdout, "paired\ndevice %s\nserver %s\n", id.DeviceID, strings.Join(id.Server.Addrs, ", "))
	return nil
}

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run [--state DIR] [--backend sim] [--control 127.0.0.1:0] [--dns IP,...] [--wipe-after 30s]\n\n"+
		"Keeps the channel to the server up and relays messages until SIGINT or SIGTERM.\n"+
		"With --backend stdio the program that started the agent speaks the exec protocol\n"+
		"(docs/backends/exec.md) on its stdin and stdout; logs go to stderr.\n"+
		"The sim backend's control API listens on --control (loopback only); the bound\n"+
		"address is written to DIR/"+agent.ControlAddrFile+".", stderr)
	state := fs.String("state", defaultStateDir(), "state directory (overrides $"+stateEnv+")")
	backendName := fs.String("backend", sim.Name, "phone backend: "+backendNames()+" (see docs/backends)")
	backendConfig := fs.String("backend-config", "", "JSON file with the backend's settings (mode 0600)")
	control := fs.String("control", "127.0.0.1:0", "loopback address for the sim control API; empty disables it")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	dns := fs.String("dns", "", dnsUsage)
	wipeAfter := fs.Duration("wipe-after", agent.DefaultWipeAfter, "a delivered message's text leaves the journal on disk within this long")
	sends := fs.Int("send-concurrency", agent.DefaultSendConcurrency, "messages handed to the backend at once, each for another chat (a chat's own go one at a time, in order)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"takes no arguments"}
	}
	if *wipeAfter <= 0 || *wipeAfter > time.Hour {
		return usageError{"--wipe-after must be between 1ms and 1h"}
	}
	if *sends < 1 || *sends > 64 {
		return usageError{fmt.Sprintf("--send-concurrency %d: use 1 to 64", *sends)}
	}
	open, ok := backendOpeners[*backendName]
	if !ok {
		return usageError{fmt.Sprintf("unknown backend %q (available: %s)", *backendName, backendNames())}
	}
	rawConfig, err := loadBackendConfig(*backendConfig)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	id, err := agent.LoadIdentity(*state)
	if err != nil {
		return err
	}

	phone, err := open(backendEnv{Log: log, StateDir: *state, Stdin: stdin, Stdout: stdout}, rawConfig)
	if err != nil {
		return fmt.Errorf("backend %s: %w", *backendName, err)
	}
	defer phone.Close()
	simPhone, isSim := phone.(*sim.Sim)
	hosted, isHosted := phone.(hostedBackend)
	resolver, err := useDNS(*dns, isHosted)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{StateDir: *state, Backend: phone, Log: log, Version: version, WipeAfter: *wipeAfter, SendConcurrency: *sends})
	if err != nil {
		return err
	}
	if isHosted {
		hosted.SetHost(agentHost{Agent: a, dns: resolver})
	}
	if d, ok := phone.(interface{ Done() <-chan struct{} }); ok {
		// The app that runs us went away (closed our stdin): stop.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-d.Done():
				log.Info().Msg("the phone program closed the connection; stopping")
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	if *control != "" && isSim {
		token, err := sim.LoadOrCreateControlToken(*state)
		if err != nil {
			return err
		}
		ln, err := sim.ListenControl(*control)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: simPhone.Handler(a.Connected, token), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: time.Minute, IdleTimeout: time.Minute}
		go func() { _ = srv.Serve(ln) }()
		addrFile := filepath.Join(*state, agent.ControlAddrFile)
		bound := ln.Addr().String()
		if err := atomicfile.Write(addrFile, []byte(bound+"\n"), 0o600); err != nil {
			srv.Close()
			return fmt.Errorf("write %s: %w", addrFile, err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			if b, err := os.ReadFile(addrFile); err == nil && strings.TrimSpace(string(b)) == bound {
				_ = os.Remove(addrFile)
			}
		}()
		log.Info().Str("control", bound).Msg("sim control API listening")
	}
	log.Info().Str("device", id.DeviceID.Short()).Str("backend", phone.Name()).Str("version", version).Msg("agent starting")
	return a.Run(ctx)
}

func cmdSimInject(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sim inject", "sim inject [--state DIR] [--control ADDR] --from NUMBER --text TEXT\n\n"+
		"Makes the simulated phone receive TEXT from NUMBER, through the control API of a running\n"+
		"`rcsgate-agent run` (found via DIR/"+agent.ControlAddrFile+" unless --control is given; its\n"+
		"token is DIR/"+sim.ControlTokenFile+").", stderr)
	state := fs.String("state", defaultStateDir(), "state directory of the running agent")
	control := fs.String("control", "", "control API address (host:port); overrides --state")
	from := fs.String("from", "", "sender number, E.164 (+ and 7-15 digits)")
	text := fs.String("text", "", "message text")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"takes no arguments"}
	}
	if *from == "" || *text == "" {
		return usageError{"--from and --text are required"}
	}
	addr := *control
	if addr == "" {
		b, err := os.ReadFile(filepath.Join(*state, agent.ControlAddrFile))
		if err != nil {
			return fmt.Errorf("find the control API (is `rcsgate-agent run` running with --state %s?): %w", *state, err)
		}
		addr = strings.TrimSpace(string(b))
	}
	token, err := sim.ReadControlToken(*state)
	if err != nil {
		return fmt.Errorf("the control API's token (is %s the state directory of the running agent?): %w", *state, err)
	}
	body, _ := json.Marshal(sim.InjectRequest{From: *from, Text: *text})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+addr+"/v1/inject", bytes.NewReader(body))
	if err != nil {
		return err
	}
	sim.Authorize(req, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return fmt.Errorf("control API refused: %s", e.Error)
	}
	fmt.Fprintln(stdout, "queued")
	return nil
}
