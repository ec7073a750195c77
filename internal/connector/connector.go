// Package connector is the bridgev2 network connector for "RCS via a paired
// device": it turns wire messages into bridgev2 events and Matrix messages
// into outbox entries. It is the only package that sees both Matrix and the
// device channel.
package connector

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/configupgrade"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"

	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Channel is what the connector needs from the device channel.
type Channel interface {
	// Notify wakes a device's sender after its outbox grew.
	Notify(deviceID string)
	Connected(deviceID string) bool
	Kick(deviceID, reason string)
	Pin() [32]byte
	// FetchMedia pulls a phone message's file from the device into dst.
	FetchMedia(ctx context.Context, deviceID, msgID, want string, dst io.Writer, onHeader func(wire.MediaHeader) error) (wire.MediaHeader, error)
	// StreamMedia opens a phone message's file for reading as it arrives
	// (checked against want; the last holdback bytes only once all checked).
	StreamMedia(ctx context.Context, deviceID, msgID, want string, holdback int) (wire.MediaStream, error)
	// SendTyping passes a Matrix user's typing to a connected device.
	SendTyping(deviceID, chat string, active bool) error
	// Caps is what the device's backend carries per transport.
	Caps(deviceID string) (caps map[string]wire.Caps, sims []int, ok bool)
}

// Config is the connector's part of the bridge configuration.
type Config struct {
	// IDKey keys the hash that turns phone numbers into ghost and portal
	// ids, so Matrix ids and logs never carry a number.
	IDKey []byte
	// PairAddrs are the host:port pairs put in pairing links.
	PairAddrs []string
	// PairTTL bounds how long a pairing link works.
	PairTTL time.Duration
	// QueueLimit is how many messages may wait for one phone; QueueTTL how
	// long. Past either, the Matrix sender gets a failed status.
	QueueLimit int
	QueueTTL   time.Duration
	// DefaultRegion (ISO 3166, e.g. "US") lets people write numbers without
	// a country code in start-chat.
	DefaultRegion string
	// ContactSync lets the phone's contact names and photos become ghost
	// names and avatars; off, ghosts show the number only.
	ContactSync bool
	// BackfillMaxAge bounds history from before pairing: older messages the
	// phone offers are dropped. 0 means 30 days; negative disables backfill.
	BackfillMaxAge time.Duration
	// ShowNumbers puts phone numbers in Matrix: ghost display names and
	// profile identifiers (room state every member can read, and federation
	// peers when rooms federate). Off, ghosts show the phone's contact name
	// (with contact sync) or a masked number like "+1…00".
	ShowNumbers bool
	// ConfirmAfter: a message the connected phone has not reported as sent
	// after this long gets a "not confirmed yet" status (0: 1 minute);
	// UnresponsiveAfter: then the phone is reported as not responding (0:
	// 3 minutes).
	ConfirmAfter, UnresponsiveAfter time.Duration
	// SentOnlyAfterPending: a message the phone takes at once gets no
	// "sent" status (only one whose sender saw "pending" does).
	SentOnlyAfterPending bool
	// Retention deletes the bridge's record of which Matrix event is which
	// phone message after this long (0: keep). Replies, reactions and edits
	// to older messages then arrive unlinked.
	Retention time.Duration
}

// Connector implements bridgev2.NetworkConnector and devicechan.Handler.
type Connector struct {
	cfg     Config
	store   *store.Store
	ch      Channel
	br      *bridgev2.Bridge
	status  *StatusMatrix
	started time.Time // when this process started handling messages
	// caughtUp: portals whose history the homeserver has shown up to a
	// mark written after this process started (see awaitRoomCaughtUp).
	caughtUp sync.Map

	// streamClient carries streamed files (see mediahttp.go).
	streamOnce   sync.Once
	streamClient *http.Client

	mu      sync.Mutex
	waiters map[string]chan *bridgev2.UserLogin // pairing token hash → login flow
	// unresponsive: devices reported as connected but not sending.
	unresponsive map[string]bool
	// early: rooms the bot was just invited to (see dm.go).
	early earlyRooms
}

var _ bridgev2.NetworkConnector = (*Connector)(nil)

// New builds a connector. SetChannel must be called before Start.
func New(cfg Config, st *store.Store) *Connector {
	if cfg.PairTTL == 0 {
		cfg.PairTTL = 10 * time.Minute
	}
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = 10_000
	}
	if cfg.QueueTTL == 0 {
		cfg.QueueTTL = 7 * 24 * time.Hour
	}
	if cfg.ConfirmAfter == 0 {
		cfg.ConfirmAfter = time.Minute
	}
	if cfg.UnresponsiveAfter == 0 {
		cfg.UnresponsiveAfter = 3 * time.Minute
	}
	if cfg.BackfillMaxAge == 0 {
		cfg.BackfillMaxAge = 30 * 24 * time.Hour
	}
	return &Connector{cfg: cfg, store: st, waiters: map[string]chan *bridgev2.UserLogin{}, unresponsive: map[string]bool{}}
}

// SetChannel breaks the construction cycle: the channel needs the connector
// as its handler and the connector needs the channel to send.
func (c *Connector) SetChannel(ch Channel) { c.ch = ch }

func (c *Connector) Init(br *bridgev2.Bridge) {
	c.br = br
	c.registerCommands()
	c.hookDMs()
}
func (c *Connector) Start(ctx context.Context) error {
	c.started = time.Now()
	if err := c.splitLegacyChats(ctx); err != nil {
		return err
	}
	go c.expireLoop(c.br.BackgroundCtx)
	go c.watchLoop(c.br.BackgroundCtx)
	if c.cfg.Retention > 0 {
		go c.retentionLoop(c.br.BackgroundCtx)
	}
	return nil
}

// splitLegacyChats gives chat settings stored before they were per user
// (one row per contact, shared by everyone) to each login with that chat.
func (c *Connector) splitLegacyChats(ctx context.Context) error {
	legacy, err := c.store.LegacyChats(ctx)
	if err != nil || len(legacy) == 0 {
		return err
	}
	portals, err := c.br.DB.Portal.GetAll(ctx)
	if err != nil {
		return fmt.Errorf("split chat settings per user: %w", err)
	}
	owners := map[string][]string{}
	for _, p := range portals {
		if p.Receiver != "" {
			owners[string(p.ID)] = append(owners[string(p.ID)], string(p.Receiver))
		}
	}
	if err := c.store.SplitLegacyChats(ctx, owners); err != nil {
		return err
	}
	c.br.Log.Info().Int("chats", len(legacy)).Msg("Chat settings are now kept per user")
	return nil
}

func (c *Connector) GetName() bridgev2.BridgeName {
	return bridgev2.BridgeName{
		DisplayName:          "RCS",
		NetworkURL:           "https://www.gsma.com/solutions-and-impact/technologies/networks/rcs/",
		NetworkID:            "rcs",
		BeeperBridgeType:     "rcsgate",
		DefaultPort:          29340,
		DefaultCommandPrefix: "!rcs",
	}
}

func (c *Connector) GetDBMetaTypes() database.MetaTypes { return database.MetaTypes{} }

func (c *Connector) GetCapabilities() *bridgev2.NetworkGeneralCapabilities {
	return &bridgev2.NetworkGeneralCapabilities{}
}

// GetConfig: rcsgate renders its own config file, so there is no network
// section for mxmain to upgrade.
func (c *Connector) GetConfig() (string, any, configupgrade.Upgrader) { return "", nil, nil }

func (c *Connector) GetBridgeInfoVersion() (int, int) { return 1, 1 }

func (c *Connector) LoadUserLogin(ctx context.Context, login *bridgev2.UserLogin) error {
	devID, sim := parseLoginID(login.ID)
	login.Client = &deviceClient{c: c, login: login, deviceID: devID, sim: sim}
	return nil
}

// opaqueID is the keyed hash standing for a phone number in Matrix ids.
func (c *Connector) opaqueID(number string) string {
	mac := hmac.New(sha256.New, c.cfg.IDKey)
	mac.Write([]byte(number))
	sum := mac.Sum(nil)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
}

// contact records and returns the opaque id of a number.
func (c *Connector) contact(ctx context.Context, number string) (networkid.UserID, error) {
	oid := c.opaqueID(number)
	if err := c.store.PutContact(ctx, oid, number); err != nil {
		return "", err
	}
	return networkid.UserID(oid), nil
}
