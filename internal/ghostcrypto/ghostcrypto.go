// Package ghostcrypto gives each bridged contact (a ghost user) a Matrix
// device of its own, with its own cross-signing identity and its own Megolm
// sessions, so that what a contact writes into an encrypted portal is
// encrypted by a device the contact's Matrix user owns and has signed.
// Clients then show it without a warning, and keep working with "only
// cross-signed devices". mautrix's bridge encrypts every ghost's message
// with the bridge bot's device instead, which clients flag (a device the
// sender does not own).
//
// A ghost's device is made lazily, the first time the ghost sends into an
// encrypted room: appservice login as the ghost (m.login.application_service),
// the ghost's cross-signing keys published without a password (homeservers
// that implement MSC3967, e.g. Synapse and tuwunel; Dendrite 0.13 wants a
// password, so the gateway leaves this off there), the device keys uploaded
// without one-time keys (nobody needs to open an Olm session with a ghost:
// ghosts only send), and the device signed by the ghost's self-signing key.
// Olm and Megolm state is mautrix's crypto store in bridge.db with the
// ghost's user id as account id, pickled with the bridge's pickle key; the
// ghost's access token and cross-signing seeds sit in crypto_secrets, pickled
// the same way.
package ghostcrypto

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrUnavailable: this ghost (or every ghost, on this homeserver) cannot
// have a trusted device; the caller encrypts as before, with the bot's.
var ErrUnavailable = errors.New("no trusted device for this ghost")

// Secrets kept per ghost in crypto_secrets (pickled with the pickle key).
const (
	secretToken     id.Secret = "net.rcsgate.ghost.access_token"
	secretXSigning  id.Secret = "net.rcsgate.ghost.cross_signing_seeds"
	deviceName                = "rcsgate"
	versionTable              = "rcsgate_ghostcrypto_version"
	defaultMaxReady           = 256
	// drainEvery: how often a sending ghost's to-device inbox is emptied
	// (clients share their own room keys with every device in the room,
	// ghosts' too; nothing reads them).
	drainEvery = 6 * time.Hour
	// maxDrainPages bounds one drain (a page is up to 100 messages on Synapse).
	maxDrainPages = 20
)

// Device states in rcsgate_ghost_device.
const (
	stateUnavailable = -1
	stateLoggedIn    = 0
	stateXSigned     = 1
	stateReady       = 2
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// Config is what the devices need from the bridge.
type Config struct {
	AS         *appservice.AppService
	DB         *dbutil.Database // bridge.db (mautrix's crypto tables live there)
	StateStore crypto.StateStore
	// BotMXID and GhostPattern (an SQL LIKE pattern matching every ghost)
	// keep the bridge's own users out of a session's recipients: they never
	// read what a ghost sends.
	BotMXID      id.UserID
	GhostPattern string
	PickleKey    string
	// PlaintextMentions copies m.mentions out of the ciphertext, as the
	// bot's machine does.
	PlaintextMentions bool
	// MaxLoaded bounds how many ghosts' machines stay in memory (LRU).
	MaxLoaded int
	Log       zerolog.Logger
}

// Devices hands out ghosts' devices.
type Devices struct {
	cfg Config
	db  *dbutil.Database
	log zerolog.Logger

	mu       sync.Mutex
	ghosts   map[id.UserID]*ghost
	disabled string // why no ghost gets a device (set once, by a refusal)
}

// ghost is one ghost's loaded device.
type ghost struct {
	userID id.UserID
	lock   sync.Mutex // held while the device is used
	refs   int        // under Devices.mu: users right now (no eviction)
	used   time.Time  // under Devices.mu

	// Under lock:
	loaded    bool
	state     int
	deviceID  id.DeviceID
	cli       *mautrix.Client
	store     *matrix.SQLCryptoStore
	mach      *crypto.OlmMachine
	lastDrain time.Time
}

// New prepares ghost devices; Upgrade must run before use.
func New(cfg Config) *Devices {
	if cfg.MaxLoaded <= 0 {
		cfg.MaxLoaded = defaultMaxReady
	}
	log := cfg.Log.With().Str("component", "ghost_devices").Logger()
	return &Devices{
		cfg:    cfg,
		db:     cfg.DB.Child(versionTable, upgradeTable, dbutil.ZeroLogger(log.With().Str("db_section", "ghost_devices").Logger())),
		log:    log,
		ghosts: map[id.UserID]*ghost{},
	}
}

// Upgrade creates or migrates the package's tables (after mautrix's crypto
// store has created its own).
func (d *Devices) Upgrade(ctx context.Context) error {
	if err := d.db.Upgrade(ctx); err != nil {
		return fmt.Errorf("ghost device tables: %w", err)
	}
	return nil
}

// Disabled says why ghosts get no devices, or "".
func (d *Devices) Disabled() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.disabled
}

func (d *Devices) disable(reason string) {
	d.mu.Lock()
	first := d.disabled == ""
	if first {
		d.disabled = reason
	}
	d.mu.Unlock()
	if first {
		d.log.Warn().Str("reason", reason).Msg("Contacts' messages stay encrypted by the bridge bot's device: clients mark them as sent from a device the sender does not own")
	}
}

// Encrypt encrypts content, which ghost sends into the encrypted room, with
// the ghost's own device; content then holds the m.room.encrypted content.
// ErrUnavailable (wrapped) means the ghost has no trusted device: encrypt as
// before. Other errors are worth a retry.
func (d *Devices) Encrypt(ctx context.Context, ghostID id.UserID, roomID id.RoomID, evtType event.Type, content *event.Content) error {
	g, release, err := d.acquire(ctx, ghostID, true)
	if err != nil {
		return err
	}
	defer release()
	var enc *event.EncryptedEventContent
	err = d.withToken(ctx, g, func() error {
		var err error
		enc, err = d.encrypt(ctx, g, roomID, evtType, content)
		return err
	})
	if err != nil {
		return fmt.Errorf("encrypt as %s: %w", ghostID, refusal(err))
	}
	content.Parsed = enc
	content.Raw = nil
	if time.Since(g.lastDrain) > drainEvery {
		g.lastDrain = time.Now()
		go func() { _ = d.drain(context.WithoutCancel(ctx), ghostID) }()
	}
	return nil
}

// Decrypt decrypts an event a ghost sent with its own device (the sender
// keeps the inbound copy of its sessions), e.g. to find a message after a
// crash. ErrUnavailable (wrapped) if the sender has no device.
func (d *Devices) Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	g, release, err := d.acquire(ctx, evt.Sender, false)
	if err != nil {
		return nil, err
	}
	defer release()
	return g.mach.DecryptMegolmEvent(ctx, evt)
}

// acquire returns ghostID's device, set up and locked, or ErrUnavailable.
// Without create, a ghost that has no device yet does not get one.
func (d *Devices) acquire(ctx context.Context, ghostID id.UserID, create bool) (*ghost, func(), error) {
	g, err := d.take(ghostID)
	if err != nil {
		return nil, nil, err
	}
	release := func() {
		g.lock.Unlock()
		d.drop(g)
	}
	g.lock.Lock()
	if err := d.setUp(ctx, g, create); err != nil {
		release()
		return nil, nil, refusal(err)
	}
	return g, release, nil
}

// refusal marks an error the homeserver will give again (a 4xx other than
// rate limiting) as ErrUnavailable, so the message goes out encrypted by the
// bot instead of being retried forever; the rest (5xx, network) is worth a
// retry.
func refusal(err error) error {
	var herr mautrix.HTTPError
	if errors.Is(err, ErrUnavailable) || !errors.As(err, &herr) || herr.Response == nil {
		return err
	}
	if code := herr.Response.StatusCode; code >= 400 && code < 500 && code != http.StatusTooManyRequests {
		return fmt.Errorf("%w: the homeserver refused: %w", ErrUnavailable, err)
	}
	return err
}

// take finds or makes ghostID's entry and marks it in use (so it is not
// evicted, and no second entry, with a second machine for the same
// account, can appear while it is used).
func (d *Devices) take(ghostID id.UserID) (*ghost, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.disabled != "" {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, d.disabled)
	}
	g := d.ghosts[ghostID]
	if g == nil {
		g = &ghost{userID: ghostID}
		d.ghosts[ghostID] = g
	}
	g.refs++
	g.used = time.Now()
	d.evictLocked()
	return g, nil
}

// drop ends a use of g.
func (d *Devices) drop(g *ghost) {
	d.mu.Lock()
	g.refs--
	d.mu.Unlock()
}

// evictLocked drops the least recently used idle ghosts past MaxLoaded;
// their state is all in the database.
func (d *Devices) evictLocked() {
	for len(d.ghosts) > d.cfg.MaxLoaded {
		var oldest *ghost
		for _, g := range d.ghosts {
			if g.refs == 0 && (oldest == nil || g.used.Before(oldest.used)) {
				oldest = g
			}
		}
		if oldest == nil {
			return // all busy: over the bound for a moment
		}
		delete(d.ghosts, oldest.userID)
		if oldest.mach != nil {
			oldest.mach.Destroy()
		}
	}
}

// setUp loads or makes g's device and finishes whatever step of its setup
// is missing (each step is recorded, so a crash in between resumes).
func (d *Devices) setUp(ctx context.Context, g *ghost, create bool) error {
	log := d.log.With().Stringer("ghost", g.userID).Logger()
	ctx = log.WithContext(ctx)
	if !g.loaded {
		if err := d.load(ctx, g, create); err != nil {
			return err
		}
	}
	if g.state == stateUnavailable {
		return fmt.Errorf("%w: the ghost's cross-signing identity is not ours", ErrUnavailable)
	}
	if g.state == stateReady {
		return nil
	}
	start := time.Now()
	err := d.withToken(ctx, g, func() error {
		if g.state == stateLoggedIn {
			if err := d.publishCrossSigning(ctx, g); err != nil {
				return err
			}
		}
		// Device keys without one-time keys (the count asked for is what
		// mautrix tops up to), then the self-signing key's signature.
		full := int(g.mach.GetAccount().Internal.MaxNumberOfOneTimeKeys() / 2)
		if err := g.mach.ShareKeys(ctx, full); err != nil {
			return fmt.Errorf("upload device keys: %w", err)
		}
		if err := g.mach.SignOwnDevice(ctx, g.mach.OwnIdentity()); err != nil {
			return fmt.Errorf("sign the device: %w", err)
		}
		return d.setState(ctx, g, stateReady)
	})
	if err != nil {
		return err
	}
	log.Info().Stringer("device_id", g.deviceID).Dur("took", time.Since(start)).Msg("Ghost device ready: cross-signed by the ghost's own identity")
	return nil
}

// load reads g's device from the database, or (with create) logs in for a
// new one.
func (d *Devices) load(ctx context.Context, g *ghost, create bool) error {
	var deviceID id.DeviceID
	state := -2
	err := d.db.QueryRow(ctx, `SELECT device_id, state FROM rcsgate_ghost_device WHERE user_id=$1`, g.userID).Scan(&deviceID, &state)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read ghost device: %w", err)
	}
	store := matrix.NewSQLCryptoStore(d.cfg.DB, dbutil.ZeroLogger(d.log.With().Str("db_section", "crypto").Logger()),
		string(g.userID), d.cfg.BotMXID, d.cfg.GhostPattern, d.cfg.PickleKey)
	if state == -2 && !create {
		return fmt.Errorf("%w: the ghost has no device", ErrUnavailable)
	}
	if state == -2 {
		if err := d.cfg.AS.Intent(g.userID).EnsureRegistered(ctx); err != nil {
			return fmt.Errorf("register ghost: %w", err)
		}
		cli, err := d.login(ctx, g.userID, "")
		if err != nil {
			return err
		}
		deviceID, state = cli.DeviceID, stateLoggedIn
		store.DeviceID = deviceID
		if err := store.PutSecret(ctx, secretToken, cli.AccessToken); err != nil {
			return fmt.Errorf("save ghost token: %w", err)
		}
		if _, err := d.db.Exec(ctx, `INSERT INTO rcsgate_ghost_device (user_id, device_id, state, created_at) VALUES ($1, $2, $3, $4)`,
			g.userID, deviceID, state, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("save ghost device: %w", err)
		}
		zerolog.Ctx(ctx).Debug().Stringer("device_id", deviceID).Msg("Logged in a device for the ghost")
		g.cli = cli
	} else {
		token, err := store.GetSecret(ctx, secretToken)
		if err != nil {
			return fmt.Errorf("read ghost token: %w", err)
		}
		if token == "" { // lost: open the same device again
			cli, err := d.login(ctx, g.userID, deviceID)
			if err != nil {
				return err
			}
			if err := store.PutSecret(ctx, secretToken, cli.AccessToken); err != nil {
				return fmt.Errorf("save ghost token: %w", err)
			}
			token = cli.AccessToken
		}
		if g.cli, err = d.cfg.AS.NewExternalMautrixClient(g.userID, token, ""); err != nil {
			return err
		}
		g.cli.DeviceID = deviceID
	}
	store.DeviceID = deviceID
	mlog := d.log.With().Stringer("ghost", g.userID).Logger()
	mach := crypto.NewOlmMachine(g.cli, &mlog, store, d.cfg.StateStore)
	mach.PlaintextMentions = d.cfg.PlaintextMentions
	if err := mach.Load(ctx); err != nil {
		return fmt.Errorf("load ghost's olm account: %w", err)
	}
	if seeds, err := store.GetSecret(ctx, secretXSigning); err != nil {
		return fmt.Errorf("read ghost's cross-signing keys: %w", err)
	} else if seeds != "" {
		var s crypto.CrossSigningSeeds
		if err := json.Unmarshal([]byte(seeds), &s); err != nil {
			return fmt.Errorf("ghost's cross-signing keys: %w", err)
		}
		if err := mach.ImportCrossSigningKeys(s); err != nil {
			return fmt.Errorf("ghost's cross-signing keys: %w", err)
		}
	}
	g.store, g.mach, g.deviceID, g.state, g.loaded = store, mach, deviceID, state, true
	return nil
}

// publishCrossSigning gives the ghost its cross-signing identity: the
// private seeds are saved before the upload, so a crash after it still has
// the keys that are on the server.
func (d *Devices) publishCrossSigning(ctx context.Context, g *ghost) error {
	keys := g.mach.CrossSigningKeys
	if keys == nil {
		// An identity we do not hold the keys of (bridge.db lost, the
		// homeserver kept the ghost) cannot sign a new device.
		resp, err := g.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{g.userID: {}}})
		if err != nil {
			return fmt.Errorf("query the ghost's keys: %w", err)
		}
		if _, ok := resp.MasterKeys[g.userID]; ok {
			zerolog.Ctx(ctx).Warn().Msg("The ghost has cross-signing keys this bridge does not hold; its messages stay encrypted by the bot's device")
			d.logout(ctx, g)
			return errors.Join(d.setState(ctx, g, stateUnavailable), fmt.Errorf("%w: foreign cross-signing identity", ErrUnavailable))
		}
		if keys, err = g.mach.GenerateCrossSigningKeys(); err != nil {
			return err
		}
		seeds, _ := json.Marshal(keys.Seeds())
		if err := g.store.PutSecret(ctx, secretXSigning, string(seeds)); err != nil {
			return fmt.Errorf("save ghost's cross-signing keys: %w", err)
		}
	}
	if err := g.mach.PublishCrossSigningKeys(ctx, keys, nil); err != nil {
		var herr mautrix.HTTPError
		if errors.As(err, &herr) && herr.IsStatus(http.StatusUnauthorized) {
			// The homeserver wants user-interactive auth (a password,
			// which ghosts do not have) even for a first upload.
			d.disable("the homeserver wants a password to publish cross-signing keys (no MSC3967)")
			d.logout(ctx, g)
			_, _ = d.db.Exec(ctx, `DELETE FROM rcsgate_ghost_device WHERE user_id=$1`, g.userID)
			_, _ = d.db.Exec(ctx, `DELETE FROM crypto_secrets WHERE account_id=$1`, g.userID)
			g.loaded = false
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("publish cross-signing keys: %w", err)
	}
	return d.setState(ctx, g, stateXSigned)
}

func (d *Devices) setState(ctx context.Context, g *ghost, state int) error {
	if _, err := d.db.Exec(ctx, `UPDATE rcsgate_ghost_device SET state=$1 WHERE user_id=$2`, state, g.userID); err != nil {
		return fmt.Errorf("save ghost device state: %w", err)
	}
	g.state = state
	return nil
}

// logout removes a device the ghost cannot use, so clients never see it.
func (d *Devices) logout(ctx context.Context, g *ghost) {
	if _, err := g.cli.Logout(ctx); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Logging out the ghost's unusable device failed")
	}
}

// login makes (or, with deviceID, re-opens) a device for ghostID.
func (d *Devices) login(ctx context.Context, ghostID id.UserID, deviceID id.DeviceID) (*mautrix.Client, error) {
	cli := d.cfg.AS.NewMautrixClient(ghostID)
	_, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(ghostID)},
		DeviceID:                 deviceID,
		InitialDeviceDisplayName: deviceName,
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("appservice login as the ghost: %w", err)
	}
	// From here the device's own token speaks for the ghost.
	cli.SetAppServiceUserID = false
	return cli, nil
}

// withToken runs fn; if the homeserver forgot the ghost's token, it logs in
// again to the same device and runs fn once more.
func (d *Devices) withToken(ctx context.Context, g *ghost, fn func() error) error {
	err := fn()
	if !errors.Is(err, mautrix.MUnknownToken) {
		return err
	}
	cli, lerr := d.login(ctx, g.userID, g.deviceID)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	if err := g.store.PutSecret(ctx, secretToken, cli.AccessToken); err != nil {
		return fmt.Errorf("save ghost token: %w", err)
	}
	g.cli.AccessToken = cli.AccessToken
	return fn()
}

// encrypt encrypts with the ghost's outbound session for the room, after a
// new one went to the room's users if their devices changed.
func (d *Devices) encrypt(ctx context.Context, g *ghost, roomID id.RoomID, evtType event.Type, content *event.Content) (*event.EncryptedEventContent, error) {
	users, err := g.store.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("room members: %w", err)
	}
	sess, err := g.store.GetOutboundGroupSession(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("outbound session: %w", err)
	}
	if sess != nil {
		var sessionID, recipients string
		err := d.db.QueryRow(ctx, `SELECT session_id, recipients FROM rcsgate_ghost_session WHERE user_id=$1 AND room_id=$2`,
			g.userID, roomID).Scan(&sessionID, &recipients)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("read session recipients: %w", err)
		}
		now, err := d.recipients(ctx, g, users)
		if err != nil {
			return nil, err
		}
		if sessionID != string(sess.ID()) || recipients != now {
			// A device joined or left (or users did): a new session,
			// as mautrix does for its bot on device-list changes.
			if err := g.store.RemoveOutboundGroupSession(ctx, roomID); err != nil {
				return nil, fmt.Errorf("drop outbound session: %w", err)
			}
		}
	}
	enc, err := g.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if !crypto.IsShareError(err) {
		return enc, err
	}
	if err := g.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		return nil, fmt.Errorf("share session: %w", err)
	}
	if sess, err = g.store.GetOutboundGroupSession(ctx, roomID); err != nil || sess == nil {
		return nil, fmt.Errorf("outbound session after sharing: %w", err)
	}
	now, err := d.recipients(ctx, g, users)
	if err != nil {
		return nil, err
	}
	if _, err := d.db.Exec(ctx, `INSERT INTO rcsgate_ghost_session (user_id, room_id, session_id, recipients) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, room_id) DO UPDATE SET session_id=excluded.session_id, recipients=excluded.recipients`,
		g.userID, roomID, sess.ID(), now); err != nil {
		return nil, fmt.Errorf("save session recipients: %w", err)
	}
	zerolog.Ctx(ctx).Debug().Stringer("room_id", roomID).Stringer("session_id", sess.ID()).Int("users", len(users)).
		Msg("Ghost shared a new Megolm session")
	return g.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
}

// recipients fingerprints the devices (as the crypto store knows them; the
// bot's /sync keeps them current) a session for users would go to.
func (d *Devices) recipients(ctx context.Context, g *ghost, users []id.UserID) (string, error) {
	users = slices.Clone(users)
	slices.Sort(users)
	h := sha256.New()
	for _, u := range users {
		devs, err := g.store.GetDevices(ctx, u)
		if err != nil {
			return "", fmt.Errorf("devices of %s: %w", u, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", u, len(devs))
		ids := make([]id.DeviceID, 0, len(devs))
		for did, dev := range devs {
			if dev.Trust != id.TrustStateBlacklisted {
				ids = append(ids, did)
			}
		}
		slices.Sort(ids)
		for _, did := range ids {
			fmt.Fprintf(h, "%s\x00%s\x00", did, devs[did].IdentityKey)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// drain empties the ghost's to-device inbox: clients send their room keys
// to every device in a room, and a ghost never needs them. A /sync that
// shows nothing else (no rooms, presence or account data; the ghost stays
// offline) returns them; the next one with its token deletes them.
// It returns how many messages it found.
func (d *Devices) drain(ctx context.Context, ghostID id.UserID) int {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	g, release, err := d.acquire(ctx, ghostID, false)
	if err != nil {
		d.log.Debug().Err(err).Stringer("ghost", ghostID).Msg("No device to empty the inbox of")
		return 0
	}
	defer release()
	log := d.log.With().Stringer("ghost", ghostID).Logger()
	since, err := g.store.GetNextBatch(ctx)
	if err != nil {
		log.Warn().Err(err).Msg("Reading the ghost's sync token failed")
		return 0
	}
	const filter = `{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},"room":{"rooms":[]}}`
	total := 0
	for page := 0; page < maxDrainPages; page++ {
		var resp *mautrix.RespSync
		err := d.withToken(ctx, g, func() error {
			var err error
			resp, err = g.cli.SyncRequest(ctx, 0, since, filter, false, event.PresenceOffline)
			return err
		})
		if err != nil {
			log.Warn().Err(err).Msg("Emptying the ghost's to-device inbox failed")
			return total
		}
		since = resp.NextBatch
		if err := g.store.PutNextBatch(ctx, since); err != nil {
			log.Warn().Err(err).Msg("Saving the ghost's sync token failed")
			return total
		}
		total += len(resp.ToDevice.Events)
		if len(resp.ToDevice.Events) == 0 {
			break
		}
	}
	log.Debug().Int("to_device_messages", total).Msg("Emptied the ghost's to-device inbox")
	return total
}

// SignedByOwner asks the homeserver whether user's device is signed by the
// user's self-signing key and that key by the user's master key: the chain
// a client follows before it trusts the device as its owner's.
func SignedByOwner(ctx context.Context, cli *mautrix.Client, user id.UserID, device id.DeviceID) (bool, error) {
	resp, err := cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{user: {device}}})
	if err != nil {
		return false, fmt.Errorf("query keys of %s: %w", user, err)
	}
	dev, ok := resp.DeviceKeys[user][device]
	if !ok {
		return false, nil
	}
	first := func(k mautrix.CrossSigningKeys) string {
		for _, key := range k.Keys {
			return key.String()
		}
		return ""
	}
	mk, ssk := first(resp.MasterKeys[user]), first(resp.SelfSigningKeys[user])
	if mk == "" || ssk == "" {
		return false, nil
	}
	sskSigned := resp.SelfSigningKeys[user].Signatures[user][id.NewKeyID(id.KeyAlgorithmEd25519, mk)] != ""
	devSigned := dev.Signatures[user][id.NewKeyID(id.KeyAlgorithmEd25519, ssk)] != ""
	return sskSigned && devSigned, nil
}
