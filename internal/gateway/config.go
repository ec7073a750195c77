// Package gateway assembles the rcsgate daemon: its config file, the bridgev2
// bridge with our connector, the appservice HTTP listener and the device
// channel.
package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rcsgate/rcsgate/internal/catchup"
	"github.com/rcsgate/rcsgate/internal/phone"
)

// Config is rcsgate's config file. It holds secrets and is written 0600.
type Config struct {
	StateDir   string `yaml:"state_dir"`
	Homeserver struct {
		URL    string `yaml:"url"`
		Domain string `yaml:"domain"`
		// PushEphemeral: the homeserver pushes typing and receipts to
		// appservices (MSC2409, e.g. Synapse). Off, the bridge bot's /sync
		// fetches them (Dendrite).
		PushEphemeral bool `yaml:"push_ephemeral"`
	} `yaml:"homeserver"`
	Appservice struct {
		Listen     string `yaml:"listen"` // host:port the homeserver pushes transactions to
		ID         string `yaml:"id"`
		Bot        string `yaml:"bot"`         // bot localpart
		UserPrefix string `yaml:"user_prefix"` // ghost localpart prefix
		ASToken    string `yaml:"as_token"`
		HSToken    string `yaml:"hs_token"`
	} `yaml:"appservice"`
	Channel struct {
		Listen      string   `yaml:"listen"`       // UDP host:port for QUIC
		PublicAddrs []string `yaml:"public_addrs"` // what pairing links tell devices
	} `yaml:"channel"`
	// Permissions maps "*", a server name or a user id to relay|user|admin.
	Permissions map[string]string `yaml:"permissions"`
	IDKey       string            `yaml:"id_key"` // base64; keys opaque ghost ids
	PairTTL     time.Duration     `yaml:"pair_ttl"`
	// TLS is the HTTPS front for the homeserver (certmagic); empty mode = off.
	TLS TLSConfig `yaml:"tls"`
	// Queue bounds what waits for an offline phone; past it, senders get a
	// failed status instead of silence.
	Queue struct {
		Limit int           `yaml:"limit"` // messages per device
		TTL   time.Duration `yaml:"ttl"`
		// ConfirmAfter: a connected phone that has not sent a message after
		// this long gives its sender a "not confirmed yet" status (default
		// 1m); UnresponsiveAfter: then the phone is reported as not
		// responding (default 3m).
		ConfirmAfter      time.Duration `yaml:"confirm_after"`
		UnresponsiveAfter time.Duration `yaml:"unresponsive_after"`
	} `yaml:"queue"`
	// Bridge holds what the bridge does with conversations.
	Bridge struct {
		// DefaultRegion (ISO 3166, e.g. US, DE) lets people type numbers
		// without a country code.
		DefaultRegion string `yaml:"default_region"`
		// ContactSync shows the phone's contact names and photos on ghosts;
		// off, ghosts show the number only.
		ContactSync bool `yaml:"contact_sync"`
		// BackfillMaxAge bounds the history bridged on first pairing (0:
		// 30 days, negative: none).
		BackfillMaxAge time.Duration `yaml:"backfill_max_age"`
		// SentStatus: "when_pending" (default) gives a "sent" status only to
		// a message whose sender was shown "pending" (offline or slow phone)
		// — one room event fewer per message, which is most of the bridge's
		// cost on a busy homeserver (README, "Benchmark"), and what mautrix
		// bridges do by default; "always" gives every message the phone took
		// a "sent" status (for clients that show a tick for it, e.g.
		// Beeper's). Failures and delivery reports are always shown.
		SentStatus string `yaml:"sent_status,omitempty"`
	} `yaml:"bridge"`
	// Privacy: what reaches Matrix and how long the bridge remembers it
	// (see README, "Threat model").
	Privacy struct {
		// ShowNumbers puts full phone numbers in ghost names and profiles
		// (room state). Off (default): contact names or masked numbers.
		ShowNumbers bool `yaml:"show_numbers"`
		// MessageRetention forgets which Matrix event is which phone
		// message after this long (0: keep).
		MessageRetention time.Duration `yaml:"message_retention"`
	} `yaml:"privacy"`
	// Encryption is end-to-bridge encryption of portals (README, "Encryption").
	Encryption EncryptionConfig `yaml:"encryption"`
	// CatchUp finds Matrix messages in portals that the homeserver never
	// pushed to the bridge (it crashed with them queued, or gave up) and
	// delivers them late, each once: how far back (max_age, default 24h;
	// negative turns it off), how many per portal per pass (max_events,
	// default 500) and how often a safety pass runs besides the ones at
	// start and when the homeserver is back (interval, default 10m).
	CatchUp  catchup.Config `yaml:"catch_up"`
	LogLevel string         `yaml:"log_level"`
}

// EncryptionConfig: unset switches take their defaults, so a config written
// before the section existed gets encrypted portals too.
type EncryptionConfig struct {
	// Allow lets the bridge bot take part in encrypted rooms (default on).
	Allow *bool `yaml:"allow,omitempty"`
	// Default creates every new portal encrypted (default on).
	Default *bool `yaml:"default,omitempty"`
	// Require drops unencrypted messages in portals (default off, so clients
	// without encryption still work in rooms that are not encrypted).
	Require bool `yaml:"require,omitempty"`
	// SelfSign gives the bot cross-signing keys and signs its device with
	// them, so users who verify the bot see no warnings. Unset: on, except
	// on Dendrite, which wants a password the bot does not have. The
	// recovery key is kept in bridge.db (kv_store).
	SelfSign *bool `yaml:"self_sign,omitempty"`
	// GhostDevices gives each contact's Matrix user a device of its own, with
	// its own cross-signing identity, that encrypts what the contact sends:
	// clients show such messages without a warning, also with "only
	// cross-signed devices" on. Unset: on wherever the bot self-signs
	// (homeservers that take a first cross-signing upload without a
	// password: Synapse, tuwunel; not Dendrite). Off, the bot's device
	// encrypts for contacts and clients mark their messages.
	GhostDevices *bool `yaml:"ghost_devices,omitempty"`
}

func (e EncryptionConfig) allow() bool     { return e.Allow == nil || *e.Allow }
func (e EncryptionConfig) defaultOn() bool { return e.Default == nil || *e.Default }
func (e EncryptionConfig) selfSign() bool  { return e.SelfSign == nil || *e.SelfSign }

// ghostDevices: asked for (or not refused) and possible, which needs the
// same password-less cross-signing upload as the bot's self-signing.
func (e EncryptionConfig) ghostDevices() bool {
	return e.allow() && e.selfSign() && (e.GhostDevices == nil || *e.GhostDevices)
}

// pickleKey encrypts the bridge's Olm/Megolm state at rest; it is derived
// from id_key so it survives restarts without another secret to keep.
func (c *Config) pickleKey() string {
	sum := sha256.Sum256(append([]byte("rcsgate pickle key\x00"), c.idKey()...))
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// TLSConfig configures the HTTPS front (internal/front).
type TLSConfig struct {
	Mode             string `yaml:"mode"`     // "" (off) | acme | provided | selfsigned
	Domain           string `yaml:"domain"`   // public host name serving Matrix, e.g. matrix.example.org
	Email            string `yaml:"email"`    // ACME account contact
	CA               string `yaml:"ca"`       // ACME directory URL; "" = Let's Encrypt
	CARoots          string `yaml:"ca_roots"` // PEM file trusted for the ACME server (tests, private CAs)
	CertFile         string `yaml:"cert_file"`
	KeyFile          string `yaml:"key_file"`
	HTTPSListen      string `yaml:"https_listen"` // when not socket-activated; default [::]:443
	HTTPListen       string `yaml:"http_listen"`  // default [::]:80
	PublicPort       int    `yaml:"public_port"`
	DisableHTTP01    bool   `yaml:"disable_http01"`
	DisableTLSALPN01 bool   `yaml:"disable_tlsalpn01"`
}

// InitOptions are the few things `rcsgate init` needs from a person.
type InitOptions struct {
	StateDir      string
	HomeserverURL string
	Domain        string
	ASListen      string
	ChannelListen string
	Admin         string // optional admin user id
}

// NewConfig fills a config with defaults and fresh secrets.
func NewConfig(o InitOptions) (*Config, error) {
	c := &Config{StateDir: o.StateDir, PairTTL: 10 * time.Minute, LogLevel: "info"}
	c.Queue.Limit, c.Queue.TTL = 10_000, 7*24*time.Hour
	c.Homeserver.URL, c.Homeserver.Domain = o.HomeserverURL, o.Domain
	c.Appservice.Listen = or(o.ASListen, "127.0.0.1:29340")
	c.Appservice.ID, c.Appservice.Bot, c.Appservice.UserPrefix = "rcsgate", "rcsbot", "rcs_"
	c.Channel.Listen = or(o.ChannelListen, "127.0.0.1:4443")
	c.Channel.PublicAddrs = []string{c.Channel.Listen}
	c.Permissions = map[string]string{o.Domain: "user"}
	on := true
	c.Encryption.Allow, c.Encryption.Default = &on, &on
	if o.Admin != "" {
		c.Permissions[o.Admin] = "admin"
	}
	for _, p := range []*string{&c.Appservice.ASToken, &c.Appservice.HSToken, &c.IDKey} {
		s, err := randomString()
		if err != nil {
			return nil, err
		}
		*p = s
	}
	return c, c.Validate()
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Validate says, in one line per problem, what is wrong with a config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.StateDir == "" {
		bad("state_dir is empty")
	}
	if u, err := url.Parse(c.Homeserver.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("homeserver.url %q is not an http(s) URL", c.Homeserver.URL)
	}
	if c.Homeserver.Domain == "" || strings.ContainsAny(c.Homeserver.Domain, "/@ ") {
		bad("homeserver.domain %q is not a server name", c.Homeserver.Domain)
	}
	switch c.Bridge.SentStatus {
	case "", "always", "when_pending":
	default:
		bad("bridge.sent_status %q: want always or when_pending", c.Bridge.SentStatus)
	}
	for name, addr := range map[string]string{"appservice.listen": c.Appservice.Listen, "channel.listen": c.Channel.Listen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q is not host:port", name, addr)
		}
	}
	if len(c.Appservice.ASToken) < 16 || len(c.Appservice.HSToken) < 16 {
		bad("appservice tokens are missing or too short; run `rcsgate init` to generate them")
	}
	if c.Appservice.ID == "" || c.Appservice.Bot == "" || c.Appservice.UserPrefix == "" {
		bad("appservice.id, appservice.bot and appservice.user_prefix must be set")
	}
	if k, err := base64.RawURLEncoding.DecodeString(c.IDKey); err != nil || len(k) < 16 {
		bad("id_key must be at least 16 random bytes, base64url")
	}
	if len(c.Channel.PublicAddrs) == 0 {
		bad("channel.public_addrs is empty: devices would not know where to connect")
	}
	for who, level := range c.Permissions {
		switch level {
		case "relay", "commands", "user", "admin":
		default:
			bad("permissions[%q] = %q: use relay, commands, user or admin", who, level)
		}
	}
	if c.Privacy.MessageRetention < 0 || (c.Privacy.MessageRetention > 0 && c.Privacy.MessageRetention < time.Hour) {
		bad("privacy.message_retention %s: use 0 (keep) or at least 1h", c.Privacy.MessageRetention)
	}
	if !phone.ValidRegion(c.Bridge.DefaultRegion) {
		bad("bridge.default_region %q is not an ISO 3166 region code such as US or DE", c.Bridge.DefaultRegion)
	}
	if c.PairTTL <= 0 || c.PairTTL > 24*time.Hour {
		bad("pair_ttl %s must be between 1s and 24h", c.PairTTL)
	}
	switch c.TLS.Mode {
	case "":
	case "acme", "provided", "selfsigned":
		if c.TLS.Domain == "" {
			bad("tls.domain is required when tls.mode is %s", c.TLS.Mode)
		}
		if c.TLS.Mode == "provided" && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
			bad("tls.cert_file and tls.key_file are required when tls.mode is provided")
		}
	default:
		bad("tls.mode %q: use acme, provided, selfsigned, or leave it empty for no HTTPS front", c.TLS.Mode)
	}
	if c.Encryption.GhostDevices != nil && *c.Encryption.GhostDevices && !(c.Encryption.allow() && c.Encryption.selfSign()) {
		bad("encryption.ghost_devices needs encryption.allow and encryption.self_sign (the same password-less cross-signing upload)")
	}
	if !c.Encryption.allow() && ((c.Encryption.Default != nil && *c.Encryption.Default) || c.Encryption.Require) {
		bad("encryption.default and encryption.require need encryption.allow")
	}
	if c.Queue.Limit < 0 || c.Queue.TTL < 0 {
		bad("queue.limit and queue.ttl must not be negative (0 means the default)")
	}
	if c.CatchUp.MaxEvents < 0 {
		bad("catch_up.max_events must not be negative (0 means the default, 500)")
	}
	if c.CatchUp.Interval > 0 && c.CatchUp.Interval < time.Minute {
		bad("catch_up.interval %s: use at least 1m (0 means the default, 10m; negative: no periodic pass)", c.CatchUp.Interval)
	}
	return errors.Join(errs...)
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		c.StateDir = filepath.Join(filepath.Dir(path), c.StateDir)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config with mode 0600 (it holds tokens).
func (c *Config) Save(path string) error {
	raw, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

func (c *Config) idKey() []byte {
	k, _ := base64.RawURLEncoding.DecodeString(c.IDKey)
	return k
}
