package astxn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
)

// SyncDeviceID is the bridge bot's device for its own /sync calls (typing,
// receipts and redactions here, catch-up in internal/catchup). It is not
// the crypto device and never uploads keys, so no client encrypts for it.
// tuwunel answers a /sync made with the appservice token and no device with
// HTTP 500, so the bot logs this device in instead, on every homeserver.
const SyncDeviceID = id.DeviceID("RCSGATESYNC")

// syncTokenKey is where the device's access token is kept (a fresh login
// at every start would leave a token behind each time on Synapse).
const syncTokenKey = "bot_sync_device_token"

// ValueStore keeps small named values.
type ValueStore interface {
	Value(ctx context.Context, key string) (string, bool, error)
	SetValue(ctx context.Context, key, value string) error
}

// SyncDevice hands out clients of a sync device: the bot's (RCSGATESYNC),
// or, with User set, a device of another user of the appservice's
// namespace (registered first if needed). Callers share its one access
// token: logging the device in again (tuwunel then drops the old token)
// happens only when the homeserver no longer takes the token.
type SyncDevice struct {
	AS    *appservice.AppService
	Store ValueStore
	// User, Device and TokenKey name another user's device and where its
	// token is kept; zero: the bot's SyncDeviceID under syncTokenKey.
	User     id.UserID
	Device   id.DeviceID
	TokenKey string
	// Purpose is the device's display name.
	Purpose string

	mu sync.Mutex
}

// Client returns a new client of the sync device (each caller its own, as
// each /sync loop needs its own syncer): the kept token if the homeserver
// still takes it, else a new appservice login.
func (d *SyncDevice) Client(ctx context.Context) (*mautrix.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	bot := d.AS.BotClient()
	user := cmp.Or(d.User, bot.UserID)
	device := cmp.Or(d.Device, SyncDeviceID)
	tokenKey := cmp.Or(d.TokenKey, syncTokenKey)
	newClient := func(token string) (*mautrix.Client, error) {
		cli, err := mautrix.NewClient(bot.HomeserverURL.String(), user, token)
		if err != nil {
			return nil, err
		}
		cli.DeviceID = device
		cli.Client = d.AS.HTTPClient
		cli.Log = bot.Log.With().Str("device", string(device)).Logger()
		cli.UserAgent = bot.UserAgent
		return cli, nil
	}
	if token, ok, err := d.Store.Value(ctx, tokenKey); err != nil {
		return nil, err
	} else if ok {
		cli, err := newClient(token)
		if err != nil {
			return nil, err
		}
		who, err := cli.Whoami(ctx)
		if err == nil && who.UserID == user {
			return cli, nil
		}
		if err != nil && !errors.Is(err, mautrix.MUnknownToken) {
			return nil, fmt.Errorf("sync device %s: check token: %w", device, err)
		}
		// Forgotten by the homeserver (a restored or reset server): log in again.
	}
	if user != bot.UserID {
		if err := d.AS.Intent(user).EnsureRegistered(ctx); err != nil {
			return nil, fmt.Errorf("sync device %s: register %s: %w", device, user, err)
		}
	}
	resp, err := bot.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(user)},
		DeviceID:                 device,
		InitialDeviceDisplayName: cmp.Or(d.Purpose, "rcsgate sync (typing, receipts, catch-up; no keys)"),
	})
	if err != nil {
		return nil, fmt.Errorf("sync device %s: appservice login: %w", device, err)
	}
	if err := d.Store.SetValue(ctx, tokenKey, resp.AccessToken); err != nil {
		return nil, err
	}
	return newClient(resp.AccessToken)
}

// SyncEphemeral runs the bridge bot's /sync for typing notices, read
// receipts and redactions, for homeservers that do not push them to
// appservices (MSC2409; Dendrite and tuwunel do not). The bot sits in every
// portal, so it sees them all. device gives clients of the bot's sync
// device (SyncDevice.Client). Events go through the same dispatch as pushed
// ones; a receipt seen both ways reaches the phone once (its outbox id is
// the event read), a redaction once (handled event ids). It returns when
// ctx ends.
func (h *Handler) SyncEphemeral(ctx context.Context, device func(context.Context) (*mautrix.Client, error)) {
	log := h.Log.With().Str("loop", "bot_sync").Logger()
	ctx = log.WithContext(ctx)
	for ctx.Err() == nil {
		cli, err := device(ctx)
		if err != nil {
			log.Warn().Err(err).Msg("Bot sync device unavailable; typing and receipts from Matrix wait")
			if !ctxutil.Sleep(ctx, 5*time.Second) {
				return
			}
			continue
		}
		h.syncEphemeral(ctx, cli)
	}
}

// syncEphemeral syncs with one client until ctx ends or the homeserver no
// longer takes its token.
func (h *Handler) syncEphemeral(ctx context.Context, cli *mautrix.Client) {
	log := zerolog.Ctx(ctx)
	syncer := mautrix.NewDefaultSyncer()
	// Nothing but room EDUs: no timeline, no state, no presence.
	syncer.FilterJSON = &mautrix.Filter{
		AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Room: &mautrix.RoomFilter{
			// Redactions too: Dendrite 0.13 does not push them to appservices.
			Timeline:    &mautrix.FilterPart{Limit: 50, Types: []event.Type{event.EventRedaction}},
			State:       &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			Ephemeral:   &mautrix.FilterPart{Types: []event.Type{event.EphemeralEventTyping, event.EphemeralEventReceipt}},
		},
	}
	first := true
	syncer.OnSync(func(ctx context.Context, resp *mautrix.RespSync, since string) bool {
		// The first batch is old news (receipts from before we started).
		if first {
			first = false
			return false
		}
		for roomID, room := range resp.Rooms.Join {
			var redactions []*event.Event
			for _, evt := range room.Timeline.Events {
				if evt.Type == event.EventRedaction {
					evt.RoomID = roomID
					redactions = append(redactions, evt)
				}
			}
			if len(redactions) > 0 {
				h.handle(ctx, redactions, event.UnknownEventType)
			}
			evts := make([]*event.Event, 0, len(room.Ephemeral.Events))
			for _, evt := range room.Ephemeral.Events {
				evt.RoomID = roomID
				evts = append(evts, evt)
			}
			if len(evts) > 0 {
				h.handle(ctx, evts, event.EphemeralEventType)
			}
		}
		return false // handled here; the default processing is not needed
	})
	cli.Syncer = syncer
	cli.Store = mautrix.NewMemorySyncStore()
	for ctx.Err() == nil {
		err := cli.SyncWithContext(ctx)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if errors.Is(err, mautrix.MUnknownToken) {
			log.Warn().Err(err).Msg("Homeserver no longer knows the bot's sync device; logging it in again")
			return
		}
		log.Warn().Err(err).Msg("Bot sync for typing and receipts failed; retrying")
		if !ctxutil.Sleep(ctx, 5*time.Second) {
			return
		}
	}
}
