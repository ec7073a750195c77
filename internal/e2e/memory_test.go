package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/connector"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// The daemon's heap with 10 paired, connected, idle devices stays within
// 32 MiB. rcsgate runs in this process (so its heap can be read); the agents
// and Dendrite are separate processes.
func TestMemoryBudgetTenIdleDevices(t *testing.T) {
	const devices, budget = 10, 32 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := testpeer.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hsPort, _ := testpeer.FreeLoopbackPort()
	asPort, _ := testpeer.FreeLoopbackPort()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chPort := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg, err := gateway.NewConfig(gateway.InitOptions{
		StateDir: filepath.Join(dir, "rcsgate"), HomeserverURL: fmt.Sprintf("http://127.0.0.1:%d", hsPort), Domain: "localhost",
		ASListen: fmt.Sprintf("127.0.0.1:%d", asPort), ChannelListen: fmt.Sprintf("127.0.0.1:%d", chPort),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cfg.Registration()
	if err != nil {
		t.Fatal(err)
	}
	regYAML, _ := reg.YAML()
	regPath := filepath.Join(dir, "registration.yaml")
	if err := writeFile(regPath, regYAML); err != nil {
		t.Fatal(err)
	}
	hs := testpeer.StartT(t, "", testpeer.Options{Dir: filepath.Join(dir, "dendrite"), Port: hsPort, AppserviceRegistrations: []string{regPath}})
	if _, err := hs.RegisterUser(ctx, "owner", "owner-password", false); err != nil {
		t.Fatal(err)
	}
	gwCtx, stopGW := context.WithCancel(ctx)
	ready := make(chan *gateway.Gateway, 1)
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = gateway.Run(gwCtx, cfg, zerolog.Nop(), gateway.Listeners{}, func(g *gateway.Gateway) { ready <- g })
	}()
	defer func() { stopGW(); <-done }() // closed, so a second read never hangs
	var gw *gateway.Gateway
	select {
	case gw = <-ready:
	case <-done:
		t.Fatalf("gateway stopped: %v", runErr)
	case <-ctx.Done():
		t.Fatal("gateway not ready")
	}
	for i := 0; i < devices; i++ {
		link, _, err := connector.NewPairingLink(ctx, gw.Store, "@owner:localhost", fmt.Sprintf("phone-%d", i), time.Minute,
			cfg.Channel.PublicAddrs, gw.Chan.Pin())
		if err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(dir, fmt.Sprintf("agent-%d", i))
		if out, err := exec.CommandContext(ctx, filepath.Join(bin, "rcsgate-agent"), "pair", "--state", state, link).CombinedOutput(); err != nil {
			t.Fatalf("pair %d: %v: %s", i, err, out)
		}
		cmd := exec.Command(filepath.Join(bin, "rcsgate-agent"), "run", "--state", state, "--control", "")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(gw.Chan.Sessions()) < devices {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d devices connected", len(gw.Chan.Sessions()), devices)
		case <-tick.C:
		}
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use with %d idle devices: %.1f MiB (budget %d MiB); sys %.1f MiB", devices,
		float64(ms.HeapInuse)/(1<<20), budget>>20, float64(ms.Sys)/(1<<20))
	if ms.HeapInuse > budget {
		t.Fatalf("heap in use %d bytes exceeds the %d MiB budget", ms.HeapInuse, budget>>20)
	}
}
