package ghostcrypto

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// env is a homeserver with an appservice whose ghosts are @ghost_*, and a
// bridge database as rcsgate's: mautrix's crypto and state tables.
type env struct {
	t      testing.TB
	hs     testpeer.Homeserver
	as     *appservice.AppService
	db     *dbutil.Database
	states *sqlstatestore.SQLStateStore
}

const pickleKey = "ghostcrypto test pickle key"

func newEnv(t testing.TB, kind string) *env {
	t.Helper()
	dir := t.TempDir()
	reg := appservice.CreateRegistration()
	reg.ID, reg.URL, reg.SenderLocalpart = "ghosttest", "http://127.0.0.1:9", "ghosttestbot"
	off := false
	reg.RateLimited = &off
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@ghost_.*:localhost`), true)
	regPath := filepath.Join(dir, "registration.yaml")
	if err := reg.Save(regPath); err != nil {
		t.Fatal(err)
	}
	hs := testpeer.StartT(t, kind, testpeer.Options{AppserviceRegistrations: []string{regPath}})
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: hs.ServerName(), HomeserverURL: hs.URL()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, hs: hs, as: as}
	e.db, e.states = e.newDB(filepath.Join(dir, "bridge.db"))
	as.StateStore = e.states
	return e
}

// newDB is a fresh bridge database (a lost bridge.db is a new one).
func (e *env) newDB(path string) (*dbutil.Database, *sqlstatestore.SQLStateStore) {
	e.t.Helper()
	db, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = db.Close() })
	ctx := e.t.Context()
	if err := crypto.NewSQLCryptoStore(db, nil, "", "", []byte(pickleKey)).DB.Upgrade(ctx); err != nil {
		e.t.Fatal(err)
	}
	states := sqlstatestore.NewSQLStateStore(db, nil, false)
	if err := states.Upgrade(ctx); err != nil {
		e.t.Fatal(err)
	}
	return db, states
}

// devices is what the gateway makes, on db (e.db if nil).
func (e *env) devices(db *dbutil.Database, states *sqlstatestore.SQLStateStore) *Devices {
	e.t.Helper()
	if db == nil {
		db, states = e.db, e.states
	}
	d := New(Config{
		AS: e.as, DB: db, StateStore: states, BotMXID: e.as.BotMXID(), GhostPattern: `@ghost\_%:localhost`,
		PickleKey: pickleKey, Log: zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.InfoLevel),
	})
	if err := d.Upgrade(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// user is a Matrix user with an E2EE client (mautrix's crypto helper) that
// keeps every message it decrypts.
type user struct {
	cli *mautrix.Client

	mu   sync.Mutex
	msgs []*event.Event
	got  chan struct{}
}

func (e *env) user(ctx context.Context, localpart, password string, register bool) *user {
	e.t.Helper()
	cli, err := mautrix.NewClient(e.hs.URL(), "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	if register {
		if _, err := e.hs.RegisterUser(ctx, localpart, password, false); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
	}); err != nil {
		e.t.Fatal(err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("user pickle"), filepath.Join(e.t.TempDir(), "user.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := helper.Init(ctx); err != nil {
		e.t.Fatal(err)
	}
	cli.Crypto = helper
	u := &user{cli: cli, got: make(chan struct{})}
	cli.Syncer.(*mautrix.DefaultSyncer).OnEventType(event.EventMessage, func(_ context.Context, evt *event.Event) {
		u.mu.Lock()
		u.msgs = append(u.msgs, evt)
		close(u.got)
		u.got = make(chan struct{})
		u.mu.Unlock()
	})
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cli.SyncWithContext(sctx)
	}()
	e.t.Cleanup(func() { cancel(); <-done; _ = helper.Close() })
	return u
}

// message waits for the decrypted message with body.
func (u *user) message(ctx context.Context, body string) (*event.Event, error) {
	for {
		u.mu.Lock()
		for _, m := range u.msgs {
			if m.Content.AsMessage().Body == body {
				u.mu.Unlock()
				return m, nil
			}
		}
		wait := u.got
		u.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no decrypted %q: %w", body, ctx.Err())
		case <-wait:
		}
	}
}

// room: alice's encrypted room with ghost, as the bridge's state store
// knows it.
func (e *env) room(ctx context.Context, alice *user, ghost id.UserID) id.RoomID {
	e.t.Helper()
	enc := &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}
	resp, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{ghost},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: enc}}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	in := e.as.Intent(ghost)
	if err := in.EnsureRegistered(ctx); err != nil {
		e.t.Fatal(err)
	}
	if _, err := in.JoinRoomByID(ctx, resp.RoomID); err != nil {
		e.t.Fatal(err)
	}
	for _, err := range []error{
		e.states.SetEncryptionEvent(ctx, resp.RoomID, enc),
		e.states.SetMembership(ctx, resp.RoomID, alice.cli.UserID, event.MembershipJoin),
		e.states.SetMembership(ctx, resp.RoomID, ghost, event.MembershipJoin),
	} {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return resp.RoomID
}

// send is what the bridge does for a ghost's message: encrypt with the
// ghost's device, send with the appservice token.
func (e *env) send(ctx context.Context, d *Devices, ghost id.UserID, room id.RoomID, body string) error {
	content := &event.Content{Parsed: &event.MessageEventContent{MsgType: event.MsgText, Body: body}}
	if err := d.Encrypt(ctx, ghost, room, event.EventMessage, content); err != nil {
		return err
	}
	_, err := e.as.Intent(ghost).SendMessageEvent(ctx, room, event.EventEncrypted, content)
	return err
}

// ghostDevices lists the ghost's devices with keys, as another user sees them.
func ghostDevices(t *testing.T, ctx context.Context, cli *mautrix.Client, ghost id.UserID) map[id.DeviceID]mautrix.DeviceKeys {
	t.Helper()
	resp, err := cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{ghost: {}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.DeviceKeys[ghost]
}

// fromGhostDevice: the user's client decrypted evt with a session that the
// ghost's own device sent, and trusts that device as signed by the ghost's
// cross-signing identity.
func fromGhostDevice(t *testing.T, evt *event.Event, ghost id.UserID, device id.DeviceID) {
	t.Helper()
	src := evt.Mautrix.TrustSource
	if src == nil || src.UserID != ghost || src.DeviceID != device {
		t.Fatalf("message decrypted with a session from %+v, want the ghost's device %s", src, device)
	}
	if evt.Mautrix.TrustState < id.TrustStateCrossSignedTOFU {
		t.Fatalf("client's trust in the ghost's device: %s, want cross-signed by its owner", evt.Mautrix.TrustState)
	}
}

// setUp: an env on kind, alice with her client, a ghost and their room,
// and the devices.
func setUp(t *testing.T, ctx context.Context, kind string) (*env, *user, id.UserID, id.RoomID, *Devices) {
	t.Helper()
	e := newEnv(t, kind)
	alice := e.user(ctx, "alice", "alice-password", true)
	ghost := id.UserID("@ghost_contact:localhost")
	room := e.room(ctx, alice, ghost)
	return e, alice, ghost, room, e.devices(nil, nil)
}

// TestGhostDeviceOnSynapse runs one ghost through its life on Synapse,
// which takes a first cross-signing upload without a password (MSC3967).
func TestGhostDeviceOnSynapse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e, alice, ghost, room, d := setUp(t, ctx, "synapse")

	var device id.DeviceID
	t.Run("first message from the ghost's own signed device", func(t *testing.T) {
		if err := e.send(ctx, d, ghost, room, "hello 1"); err != nil {
			t.Fatal(err)
		}
		devs := ghostDevices(t, ctx, alice.cli, ghost)
		if len(devs) != 1 {
			t.Fatalf("ghost has %d devices with keys, want 1", len(devs))
		}
		for device = range devs {
		}
		if ok, err := SignedByOwner(ctx, alice.cli, ghost, device); err != nil || !ok {
			t.Fatalf("ghost's device is not signed by the ghost's identity (%v)", err)
		}
		evt, err := alice.message(ctx, "hello 1")
		if err != nil {
			t.Fatal(err)
		}
		fromGhostDevice(t, evt, ghost, device)
		claim, err := alice.cli.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{ghost: {device: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(claim.OneTimeKeys[ghost][device]) != 0 {
			t.Fatal("the ghost's device had a one-time key; want none uploaded")
		}
	})

	t.Run("a device the user adds gets the next message", func(t *testing.T) {
		second := e.user(ctx, "alice", "alice-password", false)
		// The bridge bot's /sync learns of the new device and refreshes
		// the shared device table; stand in for it.
		bot := crypto.NewOlmMachine(e.as.BotClient(), nil, crypto.NewSQLCryptoStore(e.db, nil, "", "", []byte(pickleKey)), e.states)
		if err := bot.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.as.BotIntent().EnsureRegistered(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := bot.FetchKeys(ctx, []id.UserID{alice.cli.UserID}, true); err != nil {
			t.Fatal(err)
		}
		if err := e.send(ctx, d, ghost, room, "hello 2"); err != nil {
			t.Fatal(err)
		}
		for _, u := range []*user{alice, second} {
			evt, err := u.message(ctx, "hello 2")
			if err != nil {
				t.Fatalf("device %s: %v", u.cli.DeviceID, err)
			}
			fromGhostDevice(t, evt, ghost, device)
		}
	})

	t.Run("restart keeps the device and renews a forgotten token", func(t *testing.T) {
		acct := crypto.NewSQLCryptoStore(e.db, nil, string(ghost), device, []byte(pickleKey))
		if err := acct.PutSecret(ctx, secretToken, "syt_forgotten"); err != nil {
			t.Fatal(err)
		}
		restarted := e.devices(nil, nil)
		if err := e.send(ctx, restarted, ghost, room, "hello 3"); err != nil {
			t.Fatal(err)
		}
		evt, err := alice.message(ctx, "hello 3")
		if err != nil {
			t.Fatal(err)
		}
		fromGhostDevice(t, evt, ghost, device)
		if devs := ghostDevices(t, ctx, alice.cli, ghost); len(devs) != 1 {
			t.Fatalf("ghost has %d devices after the restart, want the same 1", len(devs))
		}
		// The forgotten token was replaced by a new login to the same
		// device (the inbox drain after the send needed it).
		if n := restarted.drain(ctx, ghost); n != 0 {
			t.Fatalf("drain after restart found %d messages, want 0", n)
		}
		if tok, err := acct.GetSecret(ctx, secretToken); err != nil || tok == "syt_forgotten" {
			t.Fatalf("token after a refused one: %q, %v; want a new one saved", tok, err)
		}
		d = restarted // the old instance's state is stale now, as after a real restart
	})

	t.Run("the inbox of room keys clients send the ghost is emptied", func(t *testing.T) {
		// Alice writes: her client shares her session with every device in
		// the room, the ghost's too.
		content := &event.MessageEventContent{MsgType: event.MsgText, Body: "from alice"}
		enc, err := alice.cli.Crypto.Encrypt(ctx, room, event.EventMessage, content)
		if errors.Is(err, crypto.ErrNoGroupSession) || crypto.IsShareError(err) {
			if err = alice.cli.Crypto.(*cryptohelper.CryptoHelper).Machine().ShareGroupSession(ctx, room, []id.UserID{alice.cli.UserID, ghost}); err == nil {
				enc, err = alice.cli.Crypto.Encrypt(ctx, room, event.EventMessage, content)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendMessageEvent(ctx, room, event.EventEncrypted, enc); err != nil {
			t.Fatal(err)
		}
		if n := d.drain(ctx, ghost); n == 0 {
			t.Fatal("the ghost's inbox was empty; alice's room key should be in it")
		}
		if n := d.drain(ctx, ghost); n != 0 {
			t.Fatalf("a second drain found %d messages: the first did not delete them", n)
		}
	})

	t.Run("an identity whose keys the bridge lost is left alone", func(t *testing.T) {
		db, states := e.newDB(filepath.Join(t.TempDir(), "lost.db"))
		fresh := e.devices(db, states)
		err := fresh.Encrypt(ctx, ghost, room, event.EventMessage, &event.Content{Parsed: &event.MessageEventContent{Body: "x"}})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Encrypt with a foreign identity: %v, want ErrUnavailable", err)
		}
		if fresh.Disabled() != "" {
			t.Fatalf("one ghost's foreign identity disabled every ghost: %s", fresh.Disabled())
		}
		if devs := ghostDevices(t, ctx, alice.cli, ghost); len(devs) != 1 {
			t.Fatalf("ghost has %d devices with keys, want still the 1 signed one", len(devs))
		}
		// The answer is remembered: no new device on the next message.
		err = fresh.Encrypt(ctx, ghost, room, event.EventMessage, &event.Content{Parsed: &event.MessageEventContent{Body: "y"}})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("second Encrypt: %v, want ErrUnavailable", err)
		}
	})
}

// TestGhostDeviceRefusedOnDendrite: Dendrite 0.13 wants a password before it
// takes cross-signing keys, so no ghost gets a device (and no unsigned one
// is left behind); the caller falls back to the bot's device.
func TestGhostDeviceRefusedOnDendrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, alice, ghost, room, d := setUp(t, ctx, "dendrite")
	err := d.Encrypt(ctx, ghost, room, event.EventMessage, &event.Content{Parsed: &event.MessageEventContent{Body: "x"}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Encrypt on Dendrite: %v, want ErrUnavailable", err)
	}
	if d.Disabled() == "" {
		t.Fatal("Dendrite's refusal did not turn ghost devices off")
	}
	if devs := ghostDevices(t, ctx, alice.cli, ghost); len(devs) != 0 {
		t.Fatalf("ghost has %d devices with keys on Dendrite, want none", len(devs))
	}
	other := id.UserID("@ghost_other:localhost")
	if err := d.Encrypt(ctx, other, room, event.EventMessage, &event.Content{Parsed: &event.MessageEventContent{Body: "y"}}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("another ghost after the refusal: %v, want ErrUnavailable at once", err)
	}
}

// BenchmarkEncrypt: what encrypting one message costs with the contact's own
// device (the recipients check included) against mautrix's one machine for
// everyone (what the bot's device does for every contact without this), both
// with a session already shared. Needs Synapse (make tools).
//
//	go test -tags goolm -run '^$' -bench Encrypt ./internal/ghostcrypto
func BenchmarkEncrypt(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, "synapse")
	if _, err := e.hs.RegisterUser(ctx, "alice", "alice-password", false); err != nil {
		b.Fatal(err)
	}
	alice := e.user(ctx, "alice", "alice-password", false)
	ghost := id.UserID("@ghost_bench:localhost")
	room := e.room(ctx, alice, ghost)
	d := e.devices(nil, nil)
	msg := func() *event.Content {
		return &event.Content{Parsed: &event.MessageEventContent{MsgType: event.MsgText, Body: "a message of ordinary length, about sixty characters"}}
	}
	if err := d.Encrypt(ctx, ghost, room, event.EventMessage, msg()); err != nil {
		b.Fatal(err)
	}
	b.Run("contact's own device", func(b *testing.B) {
		for b.Loop() {
			if err := d.Encrypt(ctx, ghost, room, event.EventMessage, msg()); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same machine, used as mautrix's CryptoHelper.Encrypt uses the
	// bot's: encrypt, and share a new session when the old one is used up
	// (both rotate every 100 messages by default).
	g := d.ghosts[ghost]
	users := []id.UserID{alice.cli.UserID}
	b.Run("one machine for everyone", func(b *testing.B) {
		for b.Loop() {
			_, err := g.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, msg())
			if crypto.IsShareError(err) {
				if err = g.mach.ShareGroupSession(ctx, room, users); err == nil {
					_, err = g.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, msg())
				}
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
