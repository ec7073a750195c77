// Command rcsgate is the server daemon and its admin CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rcsgate/rcsgate/internal/asreg"
	"github.com/rcsgate/rcsgate/internal/cliflag"
	"github.com/rcsgate/rcsgate/internal/connector"
	"github.com/rcsgate/rcsgate/internal/cpuprof"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/qrterm"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/sysd"
)

const usage = `rcsgate — a Matrix bridge to RCS and SMS through your own phone

Usage:
  rcsgate init --state DIR --homeserver URL --domain NAME [--admin @you:NAME]
                                   write DIR/config.yaml and DIR/registration.yaml
  rcsgate serve [--config FILE]    run the bridge and the device channel
  rcsgate registration [--format yaml|tuwunel] [--config FILE]
                                   print the appservice registration for the homeserver
                                   (tuwunel: the config table tuwunel before 1.6.0 needs)
  rcsgate pair --user @you:NAME [--name NAME] [--ttl 10m] [--config FILE]
                                   print a one-time pairing link for rcsgate-agent
  rcsgate status [--config FILE]   devices: connected since, last seen, RTT, queues both ways
  rcsgate device list|revoke ID|rename ID NAME [--config FILE]
                                   manage paired devices; revoke takes effect at once
  rcsgate backup --to DIR|s3://BUCKET/PREFIX [--keep N] [--config FILE]
                                   write an encrypted backup (age) of config, databases and keys
  rcsgate restore --from FILE|DIR|s3://… --state DIR [--force]
                                   restore a backup; paired devices need no new pairing

The config file defaults to $RCSGATE_CONFIG, else ./rcsgate-state/config.yaml.
Run "rcsgate COMMAND -h" for a command's flags.
`

// errUsage makes main exit 2 instead of 1.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cpuprof.Stop() // RCSGATE_CPUPROFILE: the last profile is written out
	switch {
	case err == nil:
	case errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "rcsgate:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"init": cmdInit, "serve": cmdServe, "registration": cmdRegistration, "pair": cmdPair, "status": cmdStatus, "device": cmdDevice,
		"backup": cmdBackup, "restore": cmdRestore,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprintf(stderr, "rcsgate: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

func newFlags(name string, stderr io.Writer, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("rcsgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rcsgate %s [flags]\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func defaultConfigPath() string {
	if p := os.Getenv("RCSGATE_CONFIG"); p != "" {
		return p
	}
	return filepath.Join("rcsgate-state", "config.yaml")
}

// parse parses a command that takes flags only (in any order).
func parse(fs *flag.FlagSet, args []string) error {
	pos, err := cliflag.Parse(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr, "Write a fresh config (with new secrets) and the appservice registration.")
	var o gateway.InitOptions
	fs.StringVar(&o.StateDir, "state", "rcsgate-state", "state directory (config, databases, keys)")
	fs.StringVar(&o.HomeserverURL, "homeserver", "", "homeserver client-server URL, e.g. http://127.0.0.1:8008")
	fs.StringVar(&o.Domain, "domain", "", "homeserver server name, e.g. example.org")
	fs.StringVar(&o.ASListen, "appservice-listen", "127.0.0.1:29340", "where the homeserver reaches the bridge (TCP)")
	fs.StringVar(&o.ChannelListen, "channel-listen", "127.0.0.1:4443", "where devices reach the bridge (UDP, QUIC)")
	fs.StringVar(&o.Admin, "admin", "", "Matrix user id with admin rights on the bridge")
	force := fs.Bool("force", false, "overwrite an existing config (new secrets: devices must pair again)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.HomeserverURL == "" || o.Domain == "" {
		fmt.Fprintln(stderr, "--homeserver and --domain are required")
		fs.Usage()
		return errUsage
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return err
	}
	o.StateDir = abs
	cfgPath := filepath.Join(abs, "config.yaml")
	if _, err := os.Stat(cfgPath); err == nil && !*force {
		return fmt.Errorf("%s exists; use --force to replace it", cfgPath)
	}
	cfg, err := gateway.NewConfig(o)
	if err != nil {
		return err
	}
	if err := cfg.Save(cfgPath); err != nil {
		return err
	}
	regPath := filepath.Join(abs, "registration.yaml")
	if err := writeRegistration(cfg, regPath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s and %s.\nAdd the registration to your homeserver's appservice config, then run: rcsgate serve --config %s\n", cfgPath, regPath, cfgPath)
	return nil
}

func writeRegistration(cfg *gateway.Config, path string) error {
	reg, err := cfg.Registration()
	if err != nil {
		return err
	}
	raw, err := reg.YAML()
	if err != nil {
		return fmt.Errorf("encode registration: %w", err)
	}
	return os.WriteFile(path, []byte(raw), 0o600)
}

func cmdRegistration(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("registration", stderr, "Print the appservice registration for the homeserver: YAML (Synapse\n"+
		"app_service_config_files, Dendrite app_service_api.config_files, tuwunel >= 1.6.0 appservice_dir, or\n"+
		"tuwunel's admin room: `!admin appservices register` and the YAML in a code block), or with --format\n"+
		"tuwunel the [global.appservice.<id>] table to paste into the config of tuwunel before 1.6.0.\n"+
		"Either holds both tokens: keep it readable by the homeserver only.")
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	format := fs.String("format", "yaml", "yaml or tuwunel")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "yaml" && *format != "tuwunel" {
		fmt.Fprintf(stderr, "--format %q: use yaml or tuwunel\n", *format)
		return errUsage
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	reg, err := cfg.Registration()
	if err != nil {
		return err
	}
	raw, err := reg.YAML()
	if err != nil {
		return err
	}
	if *format == "tuwunel" {
		parsed, err := asreg.Parse([]byte(raw))
		if err != nil {
			return err
		}
		raw = "# rcsgate's appservice registration for tuwunel < 1.6.0: add to tuwunel.toml, restart tuwunel.\n" + parsed.TuwunelTable()
	}
	_, err = io.WriteString(stdout, raw)
	return err
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr, "Run the bridge: appservice listener, bridge bot and device channel.\n"+
		"Under systemd it takes the sockets named appservice, https, http and quic from its socket units,\n"+
		"reports readiness, status and watchdog pings (Type=notify) and logs to journald.")
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	logMode := fs.String("log", sysd.LogAuto, "where logs go: auto (journald when stderr is the journal, else JSON lines on stderr), journald, json")
	if err := parse(fs, args); err != nil {
		return err
	}
	// Take systemd's sockets first: it unsets LISTEN_* so nothing else
	// mistakes them for its own, and a mismatched unit fails right away.
	socks, err := sysd.Activated()
	if err != nil {
		return err
	}
	defer socks.Close() // the daemon's copies; systemd keeps its own
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	journald, err := sysd.UseJournald(*logMode)
	if err != nil {
		return err
	}
	var out io.Writer = stderr
	if journald {
		out = &sysd.JournalWriter{Fallback: stderr}
	}
	log, err := gateway.NewLogger(out, cfg.LogLevel) // redacts before the journald write
	if err != nil {
		return err
	}
	if names := socks.Names(); len(names) > 0 {
		log.Info().Strs("sockets", names).Msg("Socket activation: systemd handed over sockets")
	}
	sysd.NewNotifier(log).Starting("Starting: opening the database, waiting for the homeserver")
	return gateway.Run(ctx, cfg, log, gateway.Listeners{
		Appservice: socks.Appservice, Channel: socks.QUIC, HTTPS: socks.HTTPS, HTTP: socks.HTTP,
	}, nil)
}

func openStore(ctx context.Context, cfgPath string) (*gateway.Config, *store.Store, error) {
	cfg, err := gateway.LoadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, gateway.StoreFile))
	if err != nil {
		return nil, nil, err
	}
	return cfg, st, nil
}

func cmdPair(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("pair", stderr, "Print a one-time link that pairs a phone running rcsgate-agent with a Matrix user.")
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	user := fs.String("user", "", "Matrix user the phone will belong to, e.g. @alice:example.org")
	name := fs.String("name", "phone", "a name for the device")
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the link works")
	noQR := fs.Bool("no-qr", false, "print only the link, no QR code")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(*user) < 4 || (*user)[0] != '@' {
		fmt.Fprintln(stderr, "--user must be a Matrix user id like @alice:example.org")
		return errUsage
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		fmt.Fprintln(stderr, "--ttl must be between 1s and 24h")
		return errUsage
	}
	cfg, st, err := openStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := cfg.MayPair(*user); err != nil {
		return err
	}
	cert, err := pki.LoadOrCreateChannelCert(cfg.StateDir)
	if err != nil {
		return err
	}
	link, _, err := connector.NewPairingLink(ctx, st, *user, *name, *ttl, cfg.Channel.PublicAddrs, pki.Pin(cert.Leaf))
	if err != nil {
		return err
	}
	if !*noQR {
		fmt.Fprintln(stderr, "Scan this with the phone, or copy the link below:")
		if err := qrterm.Write(stderr, link); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "On the phone, run within %s:\n  rcsgate-agent pair '<link>'\nThe link works once.\n", *ttl)
	fmt.Fprintln(stdout, link)
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr, "Show each paired device: connection, last seen, round-trip time and queue depth both ways.")
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, st, err := openStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	devs, err := st.Devices(ctx)
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		fmt.Fprintln(stdout, "No paired devices. Pair one with: rcsgate pair --user @you:example.org")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tNAME\tOWNER\tSTATE\tLAST SEEN\tRTT\tTO PHONE\tFROM PHONE")
	for _, d := range devs {
		state := "offline"
		switch {
		case !d.Revoked.IsZero():
			state = "revoked"
		case !d.Connected.IsZero():
			state = "connected " + ago(d.Connected)
		}
		rtt := "-"
		if d.RTT > 0 && !d.Connected.IsZero() {
			rtt = d.RTT.Round(100 * time.Microsecond).String()
		}
		depth, err := st.QueueDepth(ctx, d.ID)
		if err != nil {
			return err
		}
		// To the phone: queued here plus held by the agent; from the phone:
		// held by the agent until we ack.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d+%d\t%d\n", d.ID, d.Name, d.Owner, state, ago(d.LastSeen), rtt,
			depth, d.AgentIn, d.AgentOut)
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func cmdDevice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const help = "Usage: rcsgate device list|revoke ID|rename ID NAME [--config FILE]"
	fs := newFlags("device", stderr, "Manage paired devices: list them, revoke one (at once), or rename one.\n"+
		"ID is a device's full id or its first 7+ characters, as `rcsgate status` shows it.\n"+help)
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	pos, err := cliflag.Parse(fs, args)
	if err != nil {
		return errUsage
	}
	want := map[string]int{"list": 0, "revoke": 1, "rename": 2}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, help)
		return errUsage
	}
	sub, rest := pos[0], pos[1:]
	if n, ok := want[sub]; !ok || len(rest) != n {
		fmt.Fprintln(stderr, help)
		return errUsage
	}
	_, st, err := openStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	if sub == "list" {
		return cmdStatus(ctx, []string{"--config", *cfgPath}, stdout, stderr)
	}
	id, err := resolveDevice(ctx, st, rest[0])
	if err != nil {
		return err
	}
	switch sub {
	case "revoke":
		if err := st.RevokeDevice(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Revoked %s. A running rcsgate closes its connection within a second and refuses it from now on.\n", id)
	case "rename":
		name := strings.TrimSpace(rest[1])
		if name == "" || len(name) > 64 {
			fmt.Fprintln(stderr, "the new name must be 1 to 64 characters")
			return errUsage
		}
		if err := st.RenameDevice(ctx, id, name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Renamed %s to %q.\n", id, name)
	}
	return nil
}

// resolveDevice accepts a full device id (dashes optional) or a unique
// prefix of at least 7 characters, as `rcsgate status` and logs show them.
func resolveDevice(ctx context.Context, st *store.Store, arg string) (string, error) {
	if id, err := pki.ParseDeviceID(arg); err == nil {
		return id.String(), nil
	}
	prefix := strings.ToUpper(strings.TrimSpace(arg))
	if len(prefix) < 7 {
		return "", fmt.Errorf("%q is not a device id: give the full id or at least its first 7 characters", arg)
	}
	devs, err := st.Devices(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, d := range devs {
		if strings.HasPrefix(d.ID, prefix) {
			match = append(match, d.ID)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return "", fmt.Errorf("no paired device starts with %q", prefix)
	default:
		return "", fmt.Errorf("%q matches %d devices; give more of the id", prefix, len(match))
	}
}
