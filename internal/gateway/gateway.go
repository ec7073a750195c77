package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers sqlite3-fk-wal
	"go.mau.fi/util/exhttp"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/bridgeconfig"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/bridgev2/matrix/mxmain"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/astxn"
	"github.com/rcsgate/rcsgate/internal/catchup"
	"github.com/rcsgate/rcsgate/internal/connector"
	"github.com/rcsgate/rcsgate/internal/devicechan"
	"github.com/rcsgate/rcsgate/internal/front"
	"github.com/rcsgate/rcsgate/internal/ghostcrypto"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/sysd"
)

// Paths inside the state directory.
const (
	StoreFile  = "rcsgate.db"
	BridgeFile = "bridge.db"
)

// The homeserver watch's user and device: the user is the ghost prefix +
// "_watch" ("_" is in no ghost id: those are base32 or "me.<device>").
const (
	watchLocalpartSuffix = "_watch"
	watchDeviceID        = id.DeviceID("RCSGATEWATCH")
)

// NewLogger writes JSON lines through the number-masking writer.
func NewLogger(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(or(level, "info"))
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log_level %q: %w", level, err)
	}
	return zerolog.New(redact.Writer{W: w}).Level(lvl).With().Timestamp().Logger(), nil
}

// bridgeConfig builds bridgev2's config from mxmain's own example (so every
// default is upstream's) with our settings laid over it.
func (c *Config) bridgeConfig(name bridgev2.BridgeName) (*bridgeconfig.Config, error) {
	tmpl, err := template.New("example").Delims("$<<", ">>").Parse(mxmain.MatrixExampleConfigBase)
	if err != nil {
		return nil, fmt.Errorf("bridge config template: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, name); err != nil {
		return nil, fmt.Errorf("bridge config template: %w", err)
	}
	var bc bridgeconfig.Config
	if err := yaml.Unmarshal(buf.Bytes(), &bc); err != nil {
		return nil, fmt.Errorf("bridge config defaults: %w", err)
	}
	host, port, _ := net.SplitHostPort(c.Appservice.Listen)
	bc.Homeserver.Address = c.Homeserver.URL
	bc.Homeserver.Domain = c.Homeserver.Domain
	bc.Homeserver.Software = bridgeconfig.SoftwareStandard
	bc.AppService.Address = "http://" + c.Appservice.Listen
	bc.AppService.Hostname = host
	fmt.Sscanf(port, "%d", &bc.AppService.Port)
	bc.AppService.NoServer = true // we serve its router on our own listener
	bc.AppService.ID = c.Appservice.ID
	bc.AppService.Bot.Username = c.Appservice.Bot
	bc.AppService.Bot.Displayname = "RCS bridge bot"
	bc.AppService.Bot.Avatar = ""
	bc.AppService.ASToken = c.Appservice.ASToken
	bc.AppService.HSToken = c.Appservice.HSToken
	// Typing and read receipts pushed to us (MSC2409; Synapse does, Dendrite
	// ignores it and the bot's /sync covers it there).
	bc.AppService.EphemeralEvents = true
	bc.AppService.UsernameTemplate = c.Appservice.UserPrefix + "{{.}}"
	bc.Database.Type = "sqlite3-fk-wal"
	bc.Database.URI = "file:" + filepath.Join(c.StateDir, BridgeFile) + "?_txlock=immediate"
	bc.Database.MaxOpenConns, bc.Database.MaxIdleConns = 5, 1
	perms, err := c.permissions()
	if err != nil {
		return nil, err
	}
	bc.Bridge.Permissions = perms
	// Handle each phone event to completion before acking it to the device.
	bc.Bridge.PortalEventBuffer = 0
	bc.Bridge.AsyncEvents = false
	bc.Bridge.CommandPrefix = "!rcs"
	// A transaction replayed after a crash must not send a message twice.
	bc.Bridge.DeduplicateMatrixMessages = true
	bc.Matrix.MessageStatusEvents = true
	bc.Matrix.MessageErrorNotices = true
	bc.Matrix.FederateRooms = false
	// Files over 1 MiB go through a temporary file, never a memory buffer
	// (mautrix's example config says 5 MiB; several such files at once add up).
	bc.Matrix.UploadFileThreshold = 1 << 20
	// End-to-bridge encryption (README, "Encryption"): Megolm through
	// mautrix's crypto with goolm; its state lives in bridge.db (crypto_*
	// tables), pickled with a key derived from the config's id_key.
	bc.Encryption.Allow = c.Encryption.allow()
	bc.Encryption.Default = bc.Encryption.Allow && c.Encryption.defaultOn()
	bc.Encryption.Require = c.Encryption.Require
	// The bot gets its device by appservice login and its to-device
	// messages, device lists and key counts from /sync, on every
	// homeserver: astxn's durable transaction handler does not pass on the
	// MSC2409/MSC3202 fields that appservice mode needs.
	bc.Encryption.Appservice = false
	bc.Encryption.MSC4190 = false
	bc.Encryption.SelfSign = c.Encryption.selfSign()
	bc.Encryption.PickleKey = c.pickleKey()
	bc.Provisioning.SharedSecret = "disable"
	bc.PublicMedia.Enabled = false
	bc.DirectMedia.Enabled = false
	bc.Backfill.Enabled = false
	bc.Bridge.Backfill = bc.Backfill
	return &bc, nil
}

// permissions is the permissions section as bridgev2 reads it.
func (c *Config) permissions() (bridgeconfig.PermissionConfig, error) {
	var pc bridgeconfig.PermissionConfig
	raw, _ := yaml.Marshal(c.Permissions)
	if err := yaml.Unmarshal(raw, &pc); err != nil {
		return nil, fmt.Errorf("permissions: %w", err)
	}
	return pc, nil
}

// MayPair says why user may not have a phone paired, by the same rules the
// bridge applies to its login command (the user or admin level), or nil.
func (c *Config) MayPair(user string) error {
	pc, err := c.permissions()
	if err != nil {
		return err
	}
	uid := id.UserID(user)
	if lp, _, err := uid.ParseAndValidateRelaxed(); err != nil || lp == "" {
		return fmt.Errorf("%q is not a Matrix user id like @alice:example.org", user)
	}
	if !pc.Get(uid).Login {
		return fmt.Errorf("%s may not use this bridge: give them the user (or admin) level under permissions in the config", user)
	}
	return nil
}

// frontConfig maps the tls section onto the HTTPS front.
func (c *Config) frontConfig(log zerolog.Logger) front.Config {
	return front.Config{
		Mode: c.TLS.Mode, Domain: c.TLS.Domain, ServerName: c.Homeserver.Domain, PublicPort: c.TLS.PublicPort,
		Email: c.TLS.Email, CA: c.TLS.CA, CARootsFile: c.TLS.CARoots,
		StorageDir: filepath.Join(c.StateDir, "certmagic"),
		CertFile:   c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
		Homeserver:              c.Homeserver.URL,
		DisableHTTPChallenge:    c.TLS.DisableHTTP01,
		DisableTLSALPNChallenge: c.TLS.DisableTLSALPN01,
		Log:                     log.With().Str("component", "front").Logger(),
	}
}

// Registration is the appservice registration the homeserver needs.
func (c *Config) Registration() (*appservice.Registration, error) {
	conn := connector.New(connector.Config{}, nil)
	bc, err := c.bridgeConfig(conn.GetName())
	if err != nil {
		return nil, err
	}
	reg := bc.GenerateRegistration()
	reg.AppToken, reg.ServerToken = c.Appservice.ASToken, c.Appservice.HSToken
	reg.EphemeralEvents, reg.SoruEphemeralEvents = true, true
	// mautrix picks a random sender; derive it from the token instead so
	// `rcsgate registration` prints the same file every time.
	sum := sha256.Sum256([]byte("sender:" + c.Appservice.HSToken))
	reg.SenderLocalpart = "rcsgate_" + hex.EncodeToString(sum[:8])
	return reg, nil
}

// Listeners are sockets handed over by systemd (internal/sysd, by
// FileDescriptorName=) or by a test; a nil one is bound from the config.
type Listeners struct {
	Appservice net.Listener   // "appservice": the homeserver pushes transactions here
	Channel    net.PacketConn // "quic": the device channel (UDP)
	HTTPS      net.Listener   // "https": for the TLS front (443/tcp)
	HTTP       net.Listener   // "http": ACME HTTP-01 and redirects (80/tcp)
}

// Gateway is a running rcsgate.
type Gateway struct {
	cfg    *Config
	log    zerolog.Logger
	Store  *store.Store
	Bridge *bridgev2.Bridge
	Chan   *devicechan.Server
	Conn   *connector.Connector
}

// Run starts everything and blocks until ctx ends or something fails.
// ready, if set, is called once the bridge is serving.
func Run(ctx context.Context, cfg *Config, log zerolog.Logger, ls Listeners, ready func(*Gateway)) error {
	if err := PrivateStateDir(cfg.StateDir); err != nil {
		return err
	}
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, StoreFile))
	if err != nil {
		return err
	}
	defer st.Close()
	ca, err := pki.LoadOrCreateCA(cfg.StateDir)
	if err != nil {
		return err
	}
	chCert, err := pki.LoadOrCreateChannelCert(cfg.StateDir)
	if err != nil {
		return err
	}
	conn := connector.New(connector.Config{
		IDKey: cfg.idKey(), PairAddrs: cfg.Channel.PublicAddrs, PairTTL: cfg.PairTTL,
		QueueLimit: cfg.Queue.Limit, QueueTTL: cfg.Queue.TTL,
		DefaultRegion: cfg.Bridge.DefaultRegion, ContactSync: cfg.Bridge.ContactSync, BackfillMaxAge: cfg.Bridge.BackfillMaxAge,
		SentOnlyAfterPending: cfg.Bridge.SentStatus != "always",
		ShowNumbers:          cfg.Privacy.ShowNumbers, Retention: cfg.Privacy.MessageRetention,
		ConfirmAfter: cfg.Queue.ConfirmAfter, UnresponsiveAfter: cfg.Queue.UnresponsiveAfter,
	}, st)
	// mautrix logs what it does with the bot's cross-signing keys to the
	// context's logger.
	ctx = log.WithContext(ctx)
	if cfg.Encryption.SelfSign == nil && cfg.Encryption.allow() && oldSpec(ctx, cfg.Homeserver.URL) {
		// Dendrite wants a password (UIA) before it takes cross-signing
		// keys, and the bot has none: self-signing would stop the bridge.
		log.Warn().Msg("Homeserver older than Matrix v1.11 (Dendrite wants a password for cross-signing keys): the bridge bot is not cross-signed and contacts get no devices of their own; clients mark messages in encrypted portals (encryption.self_sign unset)")
		c := *cfg
		off := false
		c.Encryption.SelfSign = &off
		cfg = &c
	}
	bc, err := cfg.bridgeConfig(conn.GetName())
	if err != nil {
		return err
	}
	if err := store.PrivateDB(filepath.Join(cfg.StateDir, BridgeFile)); err != nil {
		return err
	}
	db, err := dbutil.NewFromConfig("rcsgate", bc.Database, dbutil.ZeroLogger(log.With().Str("db_section", "main").Logger()))
	if err != nil {
		return fmt.Errorf("bridge database: %w", err)
	}
	defer db.Close()
	// Dendrite v0.13.8 advertises spec versions up to v1.2 only.
	matrix.MinSpecVersion = mautrix.SpecV12
	mx := matrix.NewConnector(bc)
	mxStatus := connector.NewStatusMatrix(mx, conn)
	br := bridgev2.NewBridge("", db, log, &bc.Bridge, mxStatus, conn, commands.NewProcessor)
	// The bot's /sync loops (crypto, and ephemeral on Dendrite) are paced:
	// see astxn.PaceSyncs. Set before the connectors start syncing.
	astxn.PaceSyncs(mx.AS.HTTPClient, astxn.SyncEvery)
	// bridgev2's own discard-megolm-session asserts that Bridge.Matrix is a
	// *matrix.Connector, which our StatusMatrix wrapper is not: replace it.
	br.Commands.(*commands.Processor).AddHandler(connector.DiscardMegolmSessionCommand(mx))
	ch := devicechan.New(st, ca, chCert, conn, log.With().Str("component", "devicechan").Logger())
	conn.SetChannel(ch)

	if err := ls.setUp(cfg, log); err != nil {
		return err
	}
	own := func(u id.UserID) bool { return u == mx.AS.BotMXID() || br.IsGhostMXID(u) }
	// The bot and the ghosts never notify anyone: see astxn.Quiet.
	quiet := &astxn.Quiet{AS: mx.AS, Log: log.With().Str("component", "quiet").Logger(), Ours: own}
	mxStatus.SetQuiet(quiet.Ensure)
	txns := &astxn.Handler{AS: mx.AS, EP: mx.EventProcessor, Store: st, Own: own, Log: log.With().Str("component", "astxn").Logger(),
		Claim: conn.ClaimPushed, Quiet: quiet}
	// Transactions wait until the bridge has started (logins loaded) and
	// catch-up's start pass is done, so a message the homeserver lost
	// before a crash is delivered before newer ones (catchup.Runner.Run
	// releases them).
	txns.Hold()
	httpSrv, asLn := newAppserviceServer(ls.Appservice, astxn.Wrap(exhttp.ApplyMiddleware(mx.AS.Router, mx.AS.Middleware...), txns),
		cfg.Appservice.HSToken, defaultAppserviceLimits)
	errc := make(chan error, 4)
	go func() {
		if err := httpSrv.Serve(asLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("appservice HTTP: %w", err)
		}
	}()
	log.Info().Str("addr", ls.Appservice.Addr().String()).Msg("Appservice listener ready")
	if cfg.TLS.Mode != "" {
		fr, err := front.New(ctx, cfg.frontConfig(log))
		if err != nil {
			return err
		}
		defer fr.Close()
		go func() {
			if err := fr.Serve(ctx, ls.HTTPS, ls.HTTP); err != nil {
				errc <- fmt.Errorf("HTTPS front: %w", err)
			}
		}()
	}

	if err := br.StartConnectors(ctx); err != nil {
		if ee := (matrix.ExitError{}); errors.As(err, &ee) && ee.ExitCode == 34 {
			return fmt.Errorf("start bridge: the bridge bot could not cross-sign itself (homeservers such as Dendrite "+
				"want a password to upload cross-signing keys; set encryption.self_sign: false there): %w", err)
		}
		return fmt.Errorf("start bridge: %w", err)
	}
	if mx.Crypto != nil {
		logBotTrust(ctx, log, mx.Crypto.Client())
		if cfg.Encryption.ghostDevices() {
			gd := ghostcrypto.New(ghostcrypto.Config{
				AS: mx.AS, DB: db, StateStore: mx.StateStore, BotMXID: mx.AS.BotMXID(),
				GhostPattern: fmt.Sprintf("@%s:%s", strings.ReplaceAll(bc.AppService.FormatUsername("%"), "_", `\_`), bc.Homeserver.Domain),
				PickleKey:    bc.Encryption.PickleKey, PlaintextMentions: bc.Encryption.PlaintextMentions, Log: log,
			})
			if err := gd.Upgrade(ctx); err != nil {
				return err
			}
			mxStatus.SetGhostDevices(gd)
			log.Info().Msg("Contacts get devices of their own, cross-signed by their own identities, in encrypted portals")
		}
	}
	// After StartConnectors: the bot is registered with the homeserver by
	// then. Its /sync calls use a device of their own (astxn.SyncDevice).
	quiet.Start(ctx)
	quiet.Ensure(mx.AS.BotMXID())
	syncDevice := (&astxn.SyncDevice{AS: mx.AS, Store: st}).Client
	// Catch-up watches the homeserver as a user in no room (see
	// catchup.Runner.WatchClient), named in the ghosts' namespace with a
	// character no ghost id has.
	watchDevice := (&astxn.SyncDevice{AS: mx.AS, Store: st,
		User:   id.NewUserID(bc.AppService.FormatUsername(watchLocalpartSuffix), bc.Homeserver.Domain),
		Device: watchDeviceID, TokenKey: "catchup_watch_device_token", Purpose: "rcsgate homeserver watch (in no room; no keys)",
	}).Client
	catchUp := &catchup.Runner{
		Cfg: cfg.CatchUp, Client: syncDevice, WatchClient: watchDevice, Store: st, Deliver: txns,
		Portals: func(ctx context.Context) (map[id.RoomID]bool, error) { return portalRooms(ctx, br) },
		Own:     own,
		Log:     log.With().Str("component", "catchup").Logger(),
	}
	if err := br.StartLogins(ctx); err != nil {
		return fmt.Errorf("start logins: %w", err)
	}
	br.PostStart(ctx)
	if !cfg.Homeserver.PushEphemeral {
		go txns.SyncEphemeral(ctx, syncDevice)
	}
	// Only now may Matrix events be handled: before the logins are loaded,
	// bridgev2 answers a message "you're not logged in" and it is lost (an
	// event handled before the crypto machine exists even panics). Until
	// this start pass is done, transactions wait (held above).
	txns.CatchUp = catchUp.PassNow
	go catchUp.Run(ctx)
	chCtx, stopCh := context.WithCancel(ctx)
	defer stopCh()
	chDone, err := ch.Listen(chCtx, ls.Channel)
	if err != nil {
		return err
	}
	go func() {
		if err := <-chDone; err != nil {
			errc <- err
		}
	}()
	gw := &Gateway{cfg: cfg, log: log, Store: st, Bridge: br, Chan: ch, Conn: conn}
	log.Info().Strs("channel", cfg.Channel.PublicAddrs).Msg("rcsgate ready")
	// Database migrated, homeserver answered, listeners up: tell systemd.
	sd := sysd.NewNotifier(log.With().Str("component", "sd_notify").Logger())
	status, err := gw.StatusLine(ctx)
	if err != nil {
		status = "Ready"
	}
	sd.Ready(status)
	sdCtx, stopSd := context.WithCancel(ctx)
	defer stopSd()
	go sd.Run(sdCtx, gw.StatusLine)
	if ready != nil {
		ready(gw)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info().Msg("Stopping")
	stopSd()
	sd.Stopping()
	stopCh()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	br.StopWithTimeout(5 * time.Second)
	return runErr
}

// PrivateStateDir creates the state directory owner-only (0700), and makes
// an existing one so: it holds the config's secrets, the device CA key and
// the databases.
func PrivateStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}

// logBotTrust says whether the bridge bot's device ended up signed by the
// bot's own cross-signing identity (the chain clients check).
func logBotTrust(ctx context.Context, log zerolog.Logger, cli *mautrix.Client) {
	if cli == nil {
		return
	}
	ok, err := ghostcrypto.SignedByOwner(ctx, cli, cli.UserID, cli.DeviceID)
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("Could not check the bridge bot's cross-signing")
	case ok:
		log.Info().Stringer("device_id", cli.DeviceID).Msg("Bridge bot device is cross-signed by the bot's own identity")
	default:
		log.Warn().Stringer("device_id", cli.DeviceID).Msg("Bridge bot device is not cross-signed: clients mark its messages in encrypted rooms, and clients set to only cross-signed devices do not share keys with it")
	}
}

// portalRooms lists the Matrix rooms of every portal.
func portalRooms(ctx context.Context, br *bridgev2.Bridge) (map[id.RoomID]bool, error) {
	portals, err := br.DB.Portal.GetAllWithMXID(ctx)
	if err != nil {
		return nil, err
	}
	rooms := make(map[id.RoomID]bool, len(portals))
	for _, p := range portals {
		rooms[p.MXID] = true
	}
	return rooms, nil
}

// oldSpec: the homeserver advertises no Matrix spec version from v1.11 on
// (Dendrite v0.13.8 stops at v1.2). Such servers may want user-interactive
// auth (a password) for a first cross-signing key upload, which the bot
// cannot give. No answer counts as new enough.
func oldSpec(ctx context.Context, hsURL string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cli, err := mautrix.NewClient(hsURL, "", "")
	if err != nil {
		return false
	}
	v, err := cli.Versions(ctx)
	return err == nil && !v.ContainsGreaterOrEqual(mautrix.SpecV111)
}
