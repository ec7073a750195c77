package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// PhoneAppReport is what --phone-app prints (and writes with --json).
type PhoneAppReport struct {
	StartedAt time.Time  `json:"started_at"`
	N         int        `json:"n"`
	Sim       RTTFigures `json:"sim_rtt_ms"`
	PhoneApp  RTTFigures `json:"phone_app_rtt_ms"`
	RatioP50  float64    `json:"ratio_p50_phone_app_over_sim"`
	RatioP99  float64    `json:"ratio_p99_phone_app_over_sim"`
}

// phoneAppBench measures in one run, on one deployment, the Matrix → phone → Matrix round trip
// through the echo contact over two phones: the sim backend, and the phone app's path (its Java
// side with a fake SmsManager that echoes, running the real agent over stdio: AgentLink, Router,
// SmsPath and its send log, the fsync'd Inbox, the stdio engine). Each has its own Matrix user.
func phoneAppBench(ctx context.Context, cfg Config, dir string) (*PhoneAppReport, error) {
	binDir, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "agent/android/build.sh")); err != nil {
		return nil, errors.New("--phone-app: run from the repository's root (it builds agent/android)")
	}
	progress("building the phone app's classes")
	cp, err := harness.AndroidClasspath(root, filepath.Join(dir, "android"))
	if err != nil {
		return nil, err
	}
	progress("starting Dendrite, rcsgate, the simulated phone and the phone app in %s", dir)
	st, err := harness.Up(ctx, harness.Options{Dir: dir, BinDir: binDir})
	if err != nil {
		return nil, err
	}
	defer st.Down()
	pw := "app-" + nonce()
	appUser, err := st.HS.RegisterUser(ctx, "phoneapp", pw, false)
	if err != nil {
		return nil, fmt.Errorf("register the phone app's user: %w", err)
	}
	app, err := st.StartPhoneApp(ctx, harness.PhoneAppOptions{Classpath: cp, User: appUser, Echo: harness.EchoNumber})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, _, err = app.Wait(wctx, 0, harness.Connected)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("phone app not connected: %w", err)
	}

	chat := func(user, pass, label string) (*harness.Client, id.RoomID, id.UserID, error) {
		c, err := harness.Login(ctx, st.Info.Homeserver, user, pass)
		if err != nil {
			return nil, "", "", err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		mgmt, err := c.OpenDM(sctx, id.UserID(st.Info.BotUserID))
		if err != nil {
			c.Close()
			return nil, "", "", fmt.Errorf("%s: DM with the bot: %w", label, err)
		}
		portal, ghost, err := c.StartChat(sctx, mgmt, harness.EchoNumber)
		if err != nil {
			c.Close()
			return nil, "", "", fmt.Errorf("%s: start-chat: %w", label, err)
		}
		return c, portal, ghost, nil
	}
	simCli, simPortal, simGhost, err := chat(st.Info.UserID, st.Info.Password, "sim")
	if err != nil {
		return nil, err
	}
	defer simCli.Close()
	appCli, appPortal, appGhost, err := chat(appUser, pw, "phone app")
	if err != nil {
		return nil, err
	}
	defer appCli.Close()

	rep := &PhoneAppReport{StartedAt: time.Now().UTC(), N: cfg.N}
	// The two phones take turns in blocks, so a drift of the machine's load
	// hits both alike.
	progress("sim and phone app: %d warm-up + %d round trips each, interleaved", cfg.Warmup, cfg.N)
	trips, err := interleavedRoundTrips([]rttPath{
		{label: "sim", ctx: ctx, cli: simCli, room: simPortal, peer: simGhost},
		{label: "phone-app", ctx: ctx, cli: appCli, room: appPortal, peer: appGhost},
	}, cfg.Warmup, cfg.N)
	if err != nil {
		return nil, err
	}
	simRTT, appRTT := rtts(trips[0]), rtts(trips[1])
	ss, err := Summarize(simRTT)
	if err != nil {
		return nil, err
	}
	as, err := Summarize(appRTT)
	if err != nil {
		return nil, err
	}
	rep.Sim, rep.PhoneApp = figures(ss), figures(as)
	if rep.RatioP50, err = Ratio(as.P50, ss.P50); err != nil {
		return nil, err
	}
	if rep.RatioP99, err = Ratio(as.P99, ss.P99); err != nil {
		return nil, err
	}
	return rep, nil
}

func (r *PhoneAppReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Matrix → phone → Matrix round trip via the echo contact (ms, n=%d each)\tp50\tp90\tp99\tmax\n", r.N)
	for _, row := range []struct {
		name string
		f    RTTFigures
	}{{"sim backend", r.Sim}, {"phone app (Java side + agent over stdio, fake SmsManager)", r.PhoneApp}} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\n", row.name, row.f.P50, row.f.P90, row.f.P99, row.f.Max)
	}
	tw.Flush()
	fmt.Fprintf(w, "phone app / sim: p50 %.2f×, p99 %.2f×\n", r.RatioP50, r.RatioP99)
}
