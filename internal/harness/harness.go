// Package harness brings up a whole rcsgate deployment on loopback — a real
// homeserver, the rcsgate daemon and a paired rcsgate-agent with the
// simulator — as real processes. The demo, the integration tests and the
// benchmark all use it, so what the demo shows is what the tests check.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// EchoNumber is the simulator's contact that answers every message.
const EchoNumber = "+12025550100"

// Options configure a stack.
type Options struct {
	Dir        string // everything lives here
	BinDir     string // rcsgate, rcsgate-agent and the homeserver's binaries
	Homeserver string // "dendrite" or "synapse"; default $RCSGATE_HOMESERVER, else "dendrite"
	User       string // demo user localpart, default "demo"
	Password   string // default: random
	LogLevel   string // rcsgate's log level, default "info"
	// Encryption keeps rcsgate's default of encrypted portals. Off (the
	// default here), portals are created unencrypted, because the harness's
	// Go client does not decrypt; the bridge still runs its crypto.
	Encryption bool
	// Configure, if set, edits rcsgate's config after `rcsgate init`.
	Configure func(*gateway.Config)
	// NoAgent leaves the phone out: the test pairs its own (PairLink) and
	// runs it (the Android app's integration test).
	NoAgent bool
	// AgentArgs are added to `rcsgate-agent run` (e.g. --wipe-after 1s).
	AgentArgs []string
	// TransactionTap puts a proxy between the homeserver and rcsgate's
	// appservice listener; Stack.DropTransactions then makes it swallow
	// transactions (answer 200, pass nothing on), as a homeserver that
	// loses them would.
	TransactionTap bool
}

// Stack is a running deployment.
type Stack struct {
	Opts       Options
	HS         testpeer.Homeserver
	ConfigPath string
	AgentState string
	ControlURL string
	// ControlToken authorises requests to the sim's control API (the
	// agent's state directory holds it).
	ControlToken string
	Info         DemoInfo

	gw     *proc
	agent  *proc
	extra  []*proc // StartProcess, AddUser's phones
	hsOpts testpeer.Options
	tap    *tap
}

// DemoInfo is what a person (or a test) needs to log in; written to demo.json.
type DemoInfo struct {
	Homeserver string `json:"homeserver"`
	UserID     string `json:"user_id"`
	Password   string `json:"password"`
	BotUserID  string `json:"bot_user_id"`
	EchoNumber string `json:"echo_number"`
	DeviceID   string `json:"device_id"`
	ControlURL string `json:"agent_control_url"`
}

// Up starts everything; on error it stops what it started.
func Up(ctx context.Context, o Options) (st *Stack, err error) {
	if o.Homeserver == "" {
		// The environment picks the server, so `make test` runs the same
		// tests against each one without editing them.
		if o.Homeserver, err = testpeer.KindFromEnv(); err != nil {
			return nil, err
		}
	}
	if !slices.Contains(testpeer.Kinds, o.Homeserver) {
		return nil, fmt.Errorf("harness: homeserver %q: want one of %v", o.Homeserver, testpeer.Kinds)
	}
	if o.User == "" {
		o.User = "demo"
	}
	if o.Password == "" {
		o.Password = "demo-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-pass"
	}
	if o.BinDir == "" {
		if o.BinDir, err = testpeer.FindBinDir(); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"rcsgate", "rcsgate-agent"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("harness: %s not found in %s (run `make build`): %w", b, o.BinDir, err)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	st = &Stack{Opts: o}
	started := st // `return nil, err` clears st before this runs
	defer func() {
		if err != nil {
			started.Down()
		}
	}()
	hsPort, err := testpeer.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	asPort, err := testpeer.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	listenPort := asPort // where rcsgate listens; the tap, if any, takes asPort
	if o.TransactionTap {
		if listenPort, err = testpeer.FreeLoopbackPort(); err != nil {
			return nil, err
		}
	}
	chPort, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	const domain = "localhost"
	hsURL := fmt.Sprintf("http://127.0.0.1:%d", hsPort)
	userID := "@" + o.User + ":" + domain
	gwState := filepath.Join(o.Dir, "rcsgate")
	st.ConfigPath = filepath.Join(gwState, "config.yaml")
	if _, err := os.Stat(st.ConfigPath); errors.Is(err, os.ErrNotExist) {
		if out, err := st.run(ctx, "rcsgate", "init", "--state", gwState, "--homeserver", hsURL, "--domain", domain,
			"--appservice-listen", fmt.Sprintf("127.0.0.1:%d", listenPort),
			"--channel-listen", fmt.Sprintf("127.0.0.1:%d", chPort), "--admin", userID); err != nil {
			return nil, fmt.Errorf("harness: rcsgate init: %w: %s", err, out)
		}
	}
	if o.LogLevel == "" {
		o.LogLevel = os.Getenv("RCSGATE_TEST_LOG_LEVEL") // e.g. debug, when chasing a failure
	}
	{
		cfg, err := gateway.LoadConfig(st.ConfigPath)
		if err != nil {
			return nil, err
		}
		if o.LogLevel != "" {
			cfg.LogLevel = o.LogLevel
		}
		// Synapse pushes typing and receipts (MSC2409); Dendrite needs the
		// bot's /sync. Each pass tests its own path.
		cfg.Homeserver.PushEphemeral = o.Homeserver == "synapse"
		encrypted := o.Encryption
		cfg.Encryption.Default = &encrypted
		if o.Configure != nil {
			o.Configure(cfg)
		}
		if err := cfg.Save(st.ConfigPath); err != nil {
			return nil, err
		}
	}
	if o.TransactionTap {
		if st.tap, err = startTap(filepath.Join(gwState, "registration.yaml"), asPort, listenPort); err != nil {
			return nil, err
		}
	}
	st.hsOpts = testpeer.Options{
		Dir: filepath.Join(o.Dir, o.Homeserver), ServerName: domain, Port: hsPort,
		AppserviceRegistrations: []string{filepath.Join(gwState, "registration.yaml")},
	}
	hs, err := testpeer.Start(ctx, o.Homeserver, st.hsOpts)
	if err != nil {
		return nil, err
	}
	st.HS = hs // only once started: a typed nil would make Down panic
	if _, err := st.HS.RegisterUser(ctx, o.User, o.Password, false); err != nil {
		return nil, fmt.Errorf("harness: register %s: %w", userID, err)
	}
	if err := st.StartGateway(ctx); err != nil {
		return nil, err
	}
	st.Info = DemoInfo{Homeserver: hsURL, UserID: userID, Password: o.Password, BotUserID: "@rcsbot:" + domain, EchoNumber: EchoNumber}
	if o.NoAgent {
		return st, nil
	}
	link, err := st.PairLink(ctx, "demo-phone")
	if err != nil {
		return nil, err
	}
	st.AgentState = filepath.Join(o.Dir, "agent")
	if out, err := st.run(ctx, "rcsgate-agent", "pair", "--state", st.AgentState, "--name", "demo-phone", link); err != nil {
		return nil, fmt.Errorf("harness: rcsgate-agent pair: %w: %s", err, out)
	}
	if err := st.StartAgent(ctx); err != nil {
		return nil, err
	}
	devID, _ := st.run(ctx, "rcsgate-agent", "id", "--state", st.AgentState)
	st.Info.DeviceID, st.Info.ControlURL = strings.TrimSpace(lastLine(devID)), st.ControlURL
	raw, _ := json.MarshalIndent(st.Info, "", "  ")
	if err := os.WriteFile(filepath.Join(o.Dir, "demo.json"), append(raw, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	return st, nil
}

// PairLink makes a one-time pairing link for the stack's user, as a person
// gets it from `rcsgate pair`.
func (st *Stack) PairLink(ctx context.Context, deviceName string) (string, error) {
	return st.PairLinkFor(ctx, st.Info.UserID, deviceName)
}

// PairLinkFor is PairLink for another user of the stack.
func (st *Stack) PairLinkFor(ctx context.Context, user, deviceName string) (string, error) {
	out, err := st.run(ctx, "rcsgate", "pair", "--config", st.ConfigPath, "--user", user, "--name", deviceName, "--no-qr")
	if err != nil {
		return "", fmt.Errorf("harness: rcsgate pair: %w: %s", err, out)
	}
	return strings.TrimSpace(lastLine(out)), nil
}

// StartGateway starts `rcsgate serve` and waits until it says it is ready.
func (st *Stack) StartGateway(ctx context.Context) error {
	p, err := st.start("rcsgate", filepath.Join(st.Opts.Dir, "rcsgate.log"), "serve", "--config", st.ConfigPath)
	if err != nil {
		return err
	}
	st.gw = p
	return p.waitLog(ctx, `"rcsgate ready"`, 60*time.Second)
}

// StartAgent starts `rcsgate-agent run` and waits until its channel is up.
func (st *Stack) StartAgent(ctx context.Context) error {
	p, ph, err := st.startAgent(ctx, st.AgentState, filepath.Join(st.Opts.Dir, "agent.log"), st.Opts.AgentArgs...)
	if err != nil {
		return err
	}
	st.agent, st.ControlURL, st.ControlToken = p, ph.URL, ph.Token
	return nil
}

// Phone is a simulator agent's control API: where it listens and the token
// its state directory holds.
type Phone struct {
	URL, Token string
}

// startAgent runs the simulator agent paired in state and returns its
// control API once its channel is up.
func (st *Stack) startAgent(ctx context.Context, state, logPath string, extra ...string) (*proc, Phone, error) {
	addrFile := filepath.Join(state, "control.addr")
	_ = os.Remove(addrFile)
	args := append([]string{"run", "--state", state, "--backend", "sim", "--control", "127.0.0.1:0"}, extra...)
	p, err := st.start("rcsgate-agent", logPath, args...)
	if err != nil {
		return nil, Phone{}, err
	}
	var ph Phone
	err = p.waitFor(ctx, 30*time.Second, func() (bool, error) {
		raw, err := os.ReadFile(addrFile)
		if err != nil {
			return false, nil
		}
		ph.URL = "http://" + strings.TrimSpace(string(raw))
		if ph.Token, err = sim.ReadControlToken(state); err != nil {
			return false, nil
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ph.URL+"/v1/healthz", nil)
		if err != nil {
			return false, err
		}
		sim.Authorize(req, ph.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		var h struct{ Connected bool }
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return h.Connected, nil
	})
	if err != nil {
		_ = p.stop(syscall.SIGTERM)
		return nil, Phone{}, err
	}
	return p, ph, nil
}

// User is another person on the stack's homeserver with a phone of their
// own (a simulator agent paired to them).
type User struct {
	UserID, Password string
	Phone            Phone
}

// AddUser registers localpart and pairs a phone for them, as a second
// person sharing the appliance would.
func (st *Stack) AddUser(ctx context.Context, localpart string) (User, error) {
	u := User{Password: "pw-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	var err error
	if u.UserID, err = st.HS.RegisterUser(ctx, localpart, u.Password, false); err != nil {
		return User{}, fmt.Errorf("harness: register %s: %w", localpart, err)
	}
	out, err := st.run(ctx, "rcsgate", "pair", "--config", st.ConfigPath, "--user", u.UserID, "--name", localpart+"-phone", "--no-qr")
	if err != nil {
		return User{}, fmt.Errorf("harness: rcsgate pair for %s: %w: %s", localpart, err, out)
	}
	state := filepath.Join(st.Opts.Dir, "agent-"+localpart)
	if out, err := st.run(ctx, "rcsgate-agent", "pair", "--state", state, "--name", localpart+"-phone", strings.TrimSpace(lastLine(out))); err != nil {
		return User{}, fmt.Errorf("harness: rcsgate-agent pair for %s: %w: %s", localpart, err, out)
	}
	p, ph, err := st.startAgent(ctx, state, filepath.Join(st.Opts.Dir, "agent-"+localpart+".log"))
	if err != nil {
		return User{}, err
	}
	st.extra = append(st.extra, p)
	u.Phone = ph
	return u, nil
}

// StartProcess runs another program (e.g. the phone app's test driver) with
// its output in the stack's directory as NAME.log; Down stops it.
func (st *Stack) StartProcess(name string, cmd *exec.Cmd) error {
	f, err := os.OpenFile(filepath.Join(st.Opts.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("harness: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: f.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	st.extra = append(st.extra, p)
	return nil
}

// KillGateway and KillAgent stop a process with SIGKILL (crash tests) or
// SIGTERM.
func (st *Stack) StopGateway(sig syscall.Signal) error { return st.gw.stop(sig) }
func (st *Stack) StopAgent(sig syscall.Signal) error   { return st.agent.stop(sig) }

// GatewayLog and AgentLog return what the processes logged so far.
func (st *Stack) GatewayLog() []byte {
	b, _ := os.ReadFile(filepath.Join(st.Opts.Dir, "rcsgate.log"))
	return b
}
func (st *Stack) AgentLog() []byte {
	b, _ := os.ReadFile(filepath.Join(st.Opts.Dir, "agent.log"))
	return b
}

// Down stops everything; safe to call twice.
func (st *Stack) Down() {
	if st.agent != nil {
		_ = st.agent.stop(syscall.SIGTERM)
	}
	for _, p := range st.extra {
		_ = p.stop(syscall.SIGTERM)
	}
	if st.gw != nil {
		_ = st.gw.stop(syscall.SIGTERM)
	}
	if st.HS != nil {
		_ = st.HS.Stop()
	}
	st.tap.close()
}

// Wait blocks until a process exits or ctx ends (the demo's main loop).
func (st *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-st.gw.done:
		return fmt.Errorf("rcsgate exited: %v", st.gw.err)
	case <-st.agent.done:
		return fmt.Errorf("rcsgate-agent exited: %v", st.agent.err)
	}
}

// Appservice returns where rcsgate takes transactions and the token the
// homeserver uses, so tests can play the homeserver.
func (st *Stack) Appservice() (url, hsToken string, err error) {
	cfg, err := gateway.LoadConfig(st.ConfigPath)
	if err != nil {
		return "", "", err
	}
	return "http://" + cfg.Appservice.Listen, cfg.Appservice.HSToken, nil
}

// SentMsg is what the simulated phone network carried.
type SentMsg struct {
	ID, Chat, Text string
}

// Sent lists what the simulated phone sent to its contacts, in order.
func (st *Stack) Sent(ctx context.Context) ([]SentMsg, error) {
	return st.SentAt(ctx, st.ControlURL)
}

// Inject makes a simulated contact send a message to the phone.
func (st *Stack) Inject(ctx context.Context, from, text string) error {
	return st.InjectAt(ctx, st.ControlURL, "", from, text)
}

func (st *Stack) bin(name string) string { return filepath.Join(st.Opts.BinDir, name) }

// Run runs one of the project's binaries to completion (e.g. a second
// `rcsgate-agent pair`) and returns its combined output.
func (st *Stack) Run(ctx context.Context, name string, args ...string) (string, error) {
	return st.run(ctx, name, args...)
}

func (st *Stack) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, st.bin(name), args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func freeUDPPort() (int, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("harness: free udp port: %w", err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}
