package sysd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// daemon is one `rcsgate serve` (possibly behind systemd-socket-activate,
// which execs into it: same pid).
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// childEnv is our environment without anything systemd-ish of our own.
func childEnv(extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch {
		case k == "NOTIFY_SOCKET", k == "JOURNAL_STREAM", k == "RCSGATE_CONFIG",
			strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"):
		default:
			env = append(env, e)
		}
	}
	return append(env, extra...)
}

func startDaemon(t *testing.T, logPath string, env []string, extra []*os.File, argv ...string) *daemon {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = env, f, f, extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			t.Logf("%s:\n%s", filepath.Base(logPath), tail(raw, 6000))
		}
	})
	return d
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("rcsgate exited with %v after SIGTERM", d.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rcsgate did not stop within 30s of SIGTERM")
	}
}

// logEntries parses the daemon's JSON log lines.
func (d *daemon) logEntries(t *testing.T) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// socketAddrs maps socket name → address for log lines with message msg.
func (d *daemon) socketAddrs(t *testing.T, msg string) map[string]string {
	out := map[string]string{}
	for _, e := range d.logEntries(t) {
		if e["message"] == msg {
			out[fmt.Sprint(e["socket"])] = fmt.Sprint(e["addr"])
		}
	}
	return out
}

// waitLog waits until the log holds text (or the process ends).
func (d *daemon) waitLog(t *testing.T, within time.Duration, text string) {
	t.Helper()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	deadline := time.After(within)
	for {
		if raw, _ := os.ReadFile(d.log); bytes.Contains(raw, []byte(text)) {
			return
		}
		select {
		case <-poll.C:
		case <-d.done:
			t.Fatalf("exited (%v) before logging %q", d.err, text)
		case <-deadline:
			t.Fatalf("no %q in %s within %s", text, filepath.Base(d.log), within)
		}
	}
}

func (d *daemon) logged(t *testing.T, msg string) bool {
	for _, e := range d.logEntries(t) {
		if e["message"] == msg {
			return true
		}
	}
	return false
}

func freeUDP(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func freeTCP(t *testing.T) int {
	t.Helper()
	p, err := testpeer.FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pingAppservice is the homeserver's POST /_matrix/app/v1/ping, which only
// rcsgate with this config's hs_token answers 200.
func pingAppservice(ctx context.Context, port int, hsToken, txn string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/_matrix/app/v1/ping", port),
		strings.NewReader(`{"transaction_id":"`+txn+`"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+hsToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: HTTP %d: %s", resp.StatusCode, body)
	}
	return nil
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mustBeFree proves nobody bound addr: we can bind it ourselves.
func mustBeFree(t *testing.T, network, addr string) {
	t.Helper()
	var err error
	if network == "tcp" {
		var l net.Listener
		if l, err = net.Listen(network, addr); err == nil {
			l.Close()
		}
	} else {
		var pc net.PacketConn
		if pc, err = net.ListenPacket(network, addr); err == nil {
			pc.Close()
		}
	}
	if err != nil {
		t.Fatalf("the config's %s address %s is in use (the daemon bound it instead of using the handed-over socket): %v", network, addr, err)
	}
}

// TestSocketActivation runs the built daemon the way the shipped units do —
// sockets from the service manager, by name — against a real Dendrite:
//
//  1. under two nested systemd-socket-activate processes (a TCP socket and a
//     UDP datagram socket): the first connection attempt starts it, it serves
//     the appservice on the handed-over TCP socket, pairs and keeps a device
//     on the handed-over UDP socket, never binds the config's own addresses,
//     and speaks sd_notify (STATUS, READY after "rcsgate ready", WATCHDOG,
//     STOPPING);
//  2. with the sockets held by the test, as systemd holds them across a
//     restart: a connection attempt made while no daemon runs is answered
//     by the next one, and the device reconnects through the same socket.
func TestSocketActivation(t *testing.T) {
	sa := need(t, "systemd-socket-activate", "systemd")
	bin := rcsgateBin(t)
	agentBin := filepath.Join(filepath.Dir(bin), "rcsgate-agent")
	if _, err := os.Stat(agentBin); err != nil {
		t.Fatalf("%s missing: run `make build` first", agentBin)
	}
	dir := t.TempDir()
	hsPort := freeTCP(t)
	cfgAS, cfgCh := fmt.Sprintf("127.0.0.1:%d", freeTCP(t)), fmt.Sprintf("127.0.0.1:%d", freeUDP(t))
	asPort, quicPort := freeTCP(t), freeUDP(t)
	asAddr, quicAddr := fmt.Sprintf("127.0.0.1:%d", asPort), fmt.Sprintf("127.0.0.1:%d", quicPort)

	// The config names addresses nobody must bind; the sockets live elsewhere.
	state := filepath.Join(dir, "rcsgate")
	cfgPath := filepath.Join(state, "config.yaml")
	run(t, bin, "init", "--state", state, "--homeserver", fmt.Sprintf("http://127.0.0.1:%d", hsPort),
		"--domain", "localhost", "--appservice-listen", cfgAS, "--channel-listen", cfgCh, "--admin", "@alice:localhost")
	cfg, err := gateway.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Channel.PublicAddrs = []string{quicAddr} // what pairing links tell devices
	if err := cfg.Save(cfgPath); err != nil {
		t.Fatal(err)
	}
	regPath := filepath.Join(state, "registration.yaml")
	reg, err := os.ReadFile(regPath)
	if err != nil {
		t.Fatal(err)
	}
	reg = bytes.Replace(reg, []byte("url: http://"+cfgAS), []byte("url: http://"+asAddr), 1)
	if err := os.WriteFile(regPath, reg, 0o600); err != nil {
		t.Fatal(err)
	}
	hs := testpeer.StartDendriteT(t, testpeer.Options{
		Dir: filepath.Join(dir, "dendrite"), Port: hsPort, AppserviceRegistrations: []string{regPath},
	})
	if _, err := hs.RegisterUser(t.Context(), "alice", "alice-password-1", false); err != nil {
		t.Fatal(err)
	}

	sd := listenNotify(t)
	env := childEnv("NOTIFY_SOCKET="+sd.Path, "WATCHDOG_USEC=2000000") // pings every second

	// 1. systemd-socket-activate. The outer one listens on TCP and, on the
	// first connection attempt, execs the inner one, which passes that fd
	// through, adds the UDP socket and execs rcsgate (same pid throughout).
	// The inner one names all the fds it passes and drops the outer's names
	// (with one --fdname it would say quic:quic), hence
	// --fdname=appservice:quic there; and it passes on only TERM, PATH, USER,
	// HOME and what -E sets, hence -E for sd_notify.
	d := startDaemon(t, filepath.Join(dir, "activated.log"), env, nil,
		sa, "-l", asAddr, "--fdname=appservice", "--",
		sa, "--datagram", "-l", quicAddr, "--fdname=appservice:quic",
		"-E", "NOTIFY_SOCKET="+sd.Path, "-E", "WATCHDOG_USEC=2000000", "--",
		bin, "serve", "--config", cfgPath, "--log", "json")

	d.waitLog(t, 30*time.Second, "Listening on "+asAddr+" as 3.")
	// This connection attempt starts the daemon; it waits in the socket's
	// backlog and must be answered, not lost.
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		first <- pingAppservice(ctx, asPort, cfg.Appservice.HSToken, "activation")
	}()
	before := sd.waitFor(t, 120*time.Second, "READY=1", func(m string) bool { return strings.HasPrefix(m, "READY=1\n") })
	if !d.logged(t, "rcsgate ready") {
		t.Fatal(`READY=1 arrived before the daemon logged "rcsgate ready"`)
	}
	if len(before) != 1 || !strings.HasPrefix(before[0], "STATUS=Starting") {
		t.Fatalf("before READY=1 expected only the starting status, got %q", before)
	}
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("the connection that triggered activation: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the connection that triggered activation was never answered")
	}

	handed := d.socketAddrs(t, "Using handed-over socket")
	if handed["appservice"] != asAddr || handed["quic"] != quicAddr {
		t.Fatalf("handed-over sockets logged as %v, want appservice=%s quic=%s", handed, asAddr, quicAddr)
	}
	if bound := d.socketAddrs(t, "Bound socket from config"); len(bound) != 0 {
		t.Fatalf("the daemon bound sockets itself: %v", bound)
	}
	mustBeFree(t, "tcp", cfgAS)
	mustBeFree(t, "udp", cfgCh)

	// The datagram socket carries QUIC: pair a device through it, run it.
	link := strings.TrimSpace(run(t, bin, "pair", "--config", cfgPath, "--user", "@alice:localhost", "--name", "phone"))
	link = link[strings.LastIndex(link, "\n")+1:]
	if !strings.Contains(link, "addr="+strings.ReplaceAll(quicAddr, ":", "%3A")) && !strings.Contains(link, "addr="+quicAddr) {
		t.Fatalf("pairing link does not point at the handed-over socket %s: %s", quicAddr, link)
	}
	agentState := filepath.Join(dir, "agent")
	run(t, agentBin, "pair", "--state", agentState, "--name", "phone", link)
	sd.waitFor(t, 60*time.Second, "the paired device in STATUS", func(m string) bool { return strings.HasPrefix(m, "STATUS=1 device paired") })
	startDaemon(t, filepath.Join(dir, "agent.log"), childEnv(), nil,
		agentBin, "run", "--state", agentState, "--backend", "sim", "--control", "127.0.0.1:0")
	sd.waitFor(t, 60*time.Second, "the connected device in STATUS", func(m string) bool { return m == "STATUS=1 device paired, 1 connected" })
	sd.waitFor(t, 30*time.Second, "WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })
	d.stop(t)
	sd.waitFor(t, 5*time.Second, "STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1") })

	// 2. The sockets stay with the "service manager" (this test) while the
	// daemon restarts. sh sets LISTEN_PID to its own pid and execs rcsgate.
	l, err := net.Listen("tcp", asAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", quicAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	pf, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	restart := func(name string) *daemon {
		return startDaemon(t, filepath.Join(dir, name+".log"),
			append(env, "LISTEN_FDS=2", "LISTEN_FDNAMES=appservice:quic"), []*os.File{lf, pf},
			"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`, "sh", bin, "serve", "--config", cfgPath, "--log", "json")
	}
	d = restart("restart1")
	sd.waitFor(t, 120*time.Second, "READY=1 after the restart", func(m string) bool { return strings.HasPrefix(m, "READY=1\n") })
	if handed := d.socketAddrs(t, "Using handed-over socket"); handed["appservice"] != asAddr || handed["quic"] != quicAddr {
		t.Fatalf("restart: handed-over sockets %v", handed)
	}
	sd.waitFor(t, 60*time.Second, "the device back after the restart", func(m string) bool { return m == "STATUS=1 device paired, 1 connected" })
	d.stop(t)

	// No daemon now; the socket still accepts, as systemd's does between
	// the old process's exit and the new one's start during an upgrade.
	// Make a whole request now; the next daemon must answer it.
	conn, err := net.DialTimeout("tcp", asAddr, 10*time.Second)
	if err != nil {
		t.Fatalf("connecting while the daemon is down: %v", err)
	}
	defer conn.Close()
	req, err := http.NewRequest(http.MethodPost, "http://"+asAddr+"/_matrix/app/v1/ping", strings.NewReader(`{"transaction_id":"during-restart"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.Appservice.HSToken)
	req.Header.Set("Content-Type", "application/json")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	d = restart("restart2")
	_ = conn.SetReadDeadline(time.Now().Add(120 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("the request sent while the daemon was down was not answered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the request sent while the daemon was down: HTTP %d", resp.StatusCode)
	}
	sd.waitFor(t, 120*time.Second, "READY=1 after the second restart", func(m string) bool { return strings.HasPrefix(m, "READY=1\n") })
	d.stop(t)
}
