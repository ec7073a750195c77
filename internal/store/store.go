// Package store keeps rcsgate's own state in SQLite: paired devices, pairing
// tokens, the per-device outbox and the contact table. bridgev2's tables live
// in a separate database; this one is small enough for the CLI to open while
// the daemon runs (WAL, busy timeout).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	_ "github.com/mattn/go-sqlite3" // SQLite driver "sqlite3"

	"github.com/rcsgate/rcsgate/internal/redact"
)

// Store is rcsgate's own database.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

var migrations = []string{
	`CREATE TABLE device (
		id          TEXT PRIMARY KEY,  -- pki.DeviceID, dashed form
		name        TEXT NOT NULL,
		owner_mxid  TEXT NOT NULL,
		cert_der    BLOB NOT NULL,
		created_ms  INTEGER NOT NULL,
		revoked_ms  INTEGER NOT NULL DEFAULT 0,
		last_seen_ms INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE pair_token (
		hash       TEXT PRIMARY KEY,   -- pki.HashToken: the token itself is never stored
		owner_mxid TEXT NOT NULL,
		name       TEXT NOT NULL,
		expires_ms INTEGER NOT NULL,
		used_ms    INTEGER NOT NULL DEFAULT 0,
		device_id  TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE outbox (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		device_id  TEXT NOT NULL,
		msg_id     TEXT NOT NULL,
		payload    BLOB NOT NULL,
		created_ms INTEGER NOT NULL,
		UNIQUE (device_id, msg_id)
	);
	CREATE INDEX outbox_device ON outbox (device_id, seq);
	CREATE TABLE contact (
		opaque_id TEXT PRIMARY KEY,    -- keyed hash used as ghost and portal id
		number    TEXT NOT NULL
	);`,
	`-- v2: durable appservice transactions, message status, live device state
	CREATE TABLE as_txn (
		id      TEXT PRIMARY KEY,
		done_ms INTEGER NOT NULL
	);
	CREATE TABLE sent_msg (
		msg_id     TEXT PRIMARY KEY,   -- Matrix event id = wire id
		device_id  TEXT NOT NULL,
		room_id    TEXT NOT NULL,
		sender     TEXT NOT NULL,
		msg_type   TEXT NOT NULL,
		state      TEXT NOT NULL,      -- queued | sent | delivered | read | failed
		created_ms INTEGER NOT NULL,
		updated_ms INTEGER NOT NULL
	);
	ALTER TABLE device ADD COLUMN connected_ms INTEGER NOT NULL DEFAULT 0;  -- 0 = not connected
	ALTER TABLE device ADD COLUMN rtt_us INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE device ADD COLUMN agent_out INTEGER NOT NULL DEFAULT 0;   -- phone→server waiting on the agent
	ALTER TABLE device ADD COLUMN agent_in INTEGER NOT NULL DEFAULT 0;    -- server→phone not yet on the phone`,
	`-- v3: phone messages whose Matrix send was under way (crash window)
	CREATE TABLE inflight (
		msg_id     TEXT PRIMARY KEY,
		started_ms INTEGER NOT NULL
	);`,
	`-- v4: files waiting for the phone to pull them; per-chat state
	CREATE TABLE media_out (
		msg_id    TEXT PRIMARY KEY,    -- Matrix event id = wire id
		url       TEXT NOT NULL,       -- mxc:// URI
		file_json TEXT NOT NULL DEFAULT '', -- encryption info for encrypted rooms
		created_ms INTEGER NOT NULL
	);
	CREATE TABLE chat (
		opaque_id  TEXT PRIMARY KEY,   -- portal id
		transport  TEXT NOT NULL DEFAULT '', -- last transport the phone used; '' unknown
		prefer     TEXT NOT NULL DEFAULT '', -- the user's choice: '' (phone decides) | sms
		sim        INTEGER NOT NULL DEFAULT 0, -- SIM slot the chat lives on
		group_json TEXT NOT NULL DEFAULT ''  -- wire.Group for group chats
	);
	ALTER TABLE contact ADD COLUMN name TEXT NOT NULL DEFAULT ''; -- from the phone's contacts, with contact sync on`,
	`-- v5: the sender was told the phone has not confirmed a message yet
	ALTER TABLE sent_msg ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;`,
	`-- v6: chat settings belong to one login (a user's phone, or one SIM of it),
	-- not to the contact alone. Rows from before keep login_id '' until the
	-- connector hands them to the logins that have that chat (SplitLegacyChats).
	CREATE TABLE chat_v6 (
		login_id   TEXT NOT NULL,      -- bridgev2 user login = the portal's receiver
		opaque_id  TEXT NOT NULL,      -- portal id
		transport  TEXT NOT NULL DEFAULT '',
		prefer     TEXT NOT NULL DEFAULT '',
		sim        INTEGER NOT NULL DEFAULT 0,
		group_json TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (login_id, opaque_id)
	);
	INSERT INTO chat_v6 (login_id, opaque_id, transport, prefer, sim, group_json)
		SELECT '', opaque_id, transport, prefer, sim, group_json FROM chat;
	DROP TABLE chat;
	ALTER TABLE chat_v6 RENAME TO chat;`,
	`-- v7: contacts whose masked numbers look alike are told apart: masked is
	-- the number as names show it (redact.Number), seq counts contacts with
	-- the same masked form in the order they were met
	ALTER TABLE contact ADD COLUMN masked TEXT NOT NULL DEFAULT '';
	ALTER TABLE contact ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
	UPDATE contact SET masked = CASE WHEN length(number) <= 4 THEN '…'
		ELSE substr(number, 1, 2) || '…' || substr(number, -2) END;
	UPDATE contact SET seq = (SELECT COUNT(*) FROM contact c2 WHERE c2.masked = contact.masked AND c2.rowid <= contact.rowid);
	CREATE INDEX contact_masked ON contact (masked);`,
	`-- v8: Matrix events handled, so the transaction path and catch-up hand
	-- each to the bridge once; small named values (catch-up checkpoint,
	-- the bot's sync device); a transaction's body, to tell a replay from a
	-- reused id with other events
	CREATE TABLE mx_event (
		event_id   TEXT PRIMARY KEY,
		room_id    TEXT NOT NULL,
		handled_ms INTEGER NOT NULL
	);
	CREATE INDEX mx_event_handled ON mx_event (handled_ms);
	CREATE TABLE kv (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);
	ALTER TABLE as_txn ADD COLUMN body_sha TEXT NOT NULL DEFAULT '';`,
}

// Open opens (and migrates) the database at path. The file and its WAL are
// readable by the owner only, whatever the umask.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := PrivateDB(path); err != nil {
		return nil, err
	}
	dsn := fmt.Sprintf("file:%s?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_foreign_keys=on&_txlock=immediate&_secure_delete=on", path)
	// secure_delete: a delivered message's text is zeroed on disk when its
	// outbox row goes, not left in a free page.
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) Close() error { return s.db.Close() }

// PrivateDB makes the SQLite database at path (created empty if missing)
// and any WAL and shared-memory files beside it mode 0600. SQLite creates a
// database 0644 minus the umask and gives its WAL and -shm files the
// database's mode, so creating the file first is what keeps them private.
func PrivateDB(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}

// Checkpoint copies the WAL into the database and truncates it to nothing.
// With secure_delete on, a delivered message's text then survives in
// neither file: deleting its outbox row zeroed it in the page, and the WAL
// frames that still held it are gone. It waits for readers (busy timeout);
// callers run it off the hot path.
func (s *Store) Checkpoint(ctx context.Context) error {
	var busy, logFrames, done int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	if busy != 0 {
		return fmt.Errorf("store: checkpoint: %w", ErrBusy)
	}
	return nil
}

// ErrBusy: a checkpoint could not finish because a reader held the WAL;
// try again later.
var ErrBusy = errors.New("database busy")

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("store: database schema v%d is newer than this build (v%d): refusing to touch it", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("store: migration to v%d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("store: set schema version: %w", err)
	}
	return tx.Commit()
}

func (s *Store) ms() int64 { return s.now().UnixMilli() }

// Token errors, told apart so the agent and the log can say which.
var (
	ErrTokenUnknown = errors.New("pairing token unknown")
	ErrTokenUsed    = errors.New("pairing token already used")
	ErrTokenExpired = errors.New("pairing token expired")
)

// AddPairToken records a one-time token (by hash) for owner, and forgets
// tokens that ended (used or expired) more than a day ago.
func (s *Store) AddPairToken(ctx context.Context, hash, owner, name string, ttl time.Duration) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO pair_token (hash, owner_mxid, name, expires_ms) VALUES (?, ?, ?, ?)`,
		hash, owner, name, s.now().Add(ttl).UnixMilli())
	if err != nil {
		return fmt.Errorf("store: add pairing token: %w", err)
	}
	day := s.now().Add(-24 * time.Hour).UnixMilli()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pair_token WHERE expires_ms < ? OR (used_ms != 0 AND used_ms < ?)`, day, day); err != nil {
		return fmt.Errorf("store: prune pairing tokens: %w", err)
	}
	return nil
}

// PairingOpen reports whether some pairing token is unused and unexpired:
// only then does the device channel take pairing connections at all.
func (s *Store) PairingOpen(ctx context.Context) (bool, error) {
	var open bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pair_token WHERE used_ms = 0 AND expires_ms >= ?)`, s.ms()).Scan(&open)
	if err != nil {
		return false, fmt.Errorf("store: pairing tokens: %w", err)
	}
	return open, nil
}

// PairToken is what a token grants.
type PairToken struct {
	Owner string
	Name  string
}

// ConsumeToken marks a token used, atomically, so two devices racing with
// the same token can't both pair.
func (s *Store) ConsumeToken(ctx context.Context, hash string) (PairToken, error) {
	var t PairToken
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return t, fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	var expires, used int64
	err = tx.QueryRowContext(ctx, `SELECT owner_mxid, name, expires_ms, used_ms FROM pair_token WHERE hash = ?`, hash).
		Scan(&t.Owner, &t.Name, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return t, ErrTokenUnknown
	case err != nil:
		return t, fmt.Errorf("store: read token: %w", err)
	case used != 0:
		return t, ErrTokenUsed
	case s.ms() > expires:
		return t, ErrTokenExpired
	}
	if _, err := tx.ExecContext(ctx, `UPDATE pair_token SET used_ms = ? WHERE hash = ?`, s.ms(), hash); err != nil {
		return t, fmt.Errorf("store: use token: %w", err)
	}
	return t, tx.Commit()
}

// Device is a paired device.
type Device struct {
	ID        string
	Name      string
	Owner     string
	CertDER   []byte
	Created   time.Time
	Revoked   time.Time // zero when active
	LastSeen  time.Time
	Connected time.Time // zero when not connected (as last recorded by the daemon)
	RTT       time.Duration
	AgentOut  int // messages the agent holds for the server
	AgentIn   int // messages the agent holds for the phone
}

// AddDevice records a newly paired device.
func (s *Store) AddDevice(ctx context.Context, d Device) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO device (id, name, owner_mxid, cert_der, created_ms) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, owner_mxid = excluded.owner_mxid, cert_der = excluded.cert_der, revoked_ms = 0`,
		d.ID, d.Name, d.Owner, d.CertDER, s.ms())
	if err != nil {
		return fmt.Errorf("store: add device: %w", err)
	}
	return nil
}

// ErrNoDevice is returned for an id that was never paired.
var ErrNoDevice = errors.New("no such device")

func scanDevice(row interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var created, revoked, seen, connected, rttUS int64
	if err := row.Scan(&d.ID, &d.Name, &d.Owner, &d.CertDER, &created, &revoked, &seen, &connected, &rttUS, &d.AgentOut, &d.AgentIn); err != nil {
		return d, err
	}
	if connected != 0 {
		d.Connected = time.UnixMilli(connected)
	}
	d.RTT = time.Duration(rttUS) * time.Microsecond
	d.Created = time.UnixMilli(created)
	if revoked != 0 {
		d.Revoked = time.UnixMilli(revoked)
	}
	if seen != 0 {
		d.LastSeen = time.UnixMilli(seen)
	}
	return d, nil
}

const deviceCols = `id, name, owner_mxid, cert_der, created_ms, revoked_ms, last_seen_ms, connected_ms, rtt_us, agent_out, agent_in`

// GetDevice loads one device.
func (s *Store) GetDevice(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM device WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNoDevice
	} else if err != nil {
		return d, fmt.Errorf("store: get device: %w", err)
	}
	return d, nil
}

// Devices lists every device, newest first.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceCols+` FROM device ORDER BY created_ms DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// OutboxItem is one message waiting for a device's ack.
type OutboxItem struct {
	Seq     int64
	MsgID   string
	Payload []byte
}

// Enqueue appends a message for a device. The same msg_id twice is a no-op,
// so a retried Matrix event can't become two phone messages.
func (s *Store) Enqueue(ctx context.Context, deviceID, msgID string, payload []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO outbox (device_id, msg_id, payload, created_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (device_id, msg_id) DO NOTHING`, deviceID, msgID, payload, s.ms())
	if err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	return nil
}

// Pending returns up to limit messages for a device with seq > after, in order.
func (s *Store) Pending(ctx context.Context, deviceID string, after int64, limit int) ([]OutboxItem, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, msg_id, payload FROM outbox WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		deviceID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: pending: %w", err)
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		if err := rows.Scan(&it.Seq, &it.MsgID, &it.Payload); err != nil {
			return nil, fmt.Errorf("store: pending: %w", err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// Acked removes messages the device has stored.
func (s *Store) Acked(ctx context.Context, deviceID string, msgIDs []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: ack: %w", err)
	}
	defer tx.Rollback()
	for _, id := range msgIDs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE device_id = ? AND msg_id = ?`, deviceID, id); err != nil {
			return fmt.Errorf("store: ack: %w", err)
		}
	}
	return tx.Commit()
}

// QueueDepth counts messages waiting for a device.
func (s *Store) QueueDepth(ctx context.Context, deviceID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE device_id = ?`, deviceID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: queue depth: %w", err)
	}
	return n, nil
}

// PutContact remembers which number an opaque id stands for; a new contact
// whose masked number looks like others' gets the next seq.
func (s *Store) PutContact(ctx context.Context, opaqueID, number string) error {
	// Known (every message but a contact's first): a read, which takes no
	// write lock.
	var known int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM contact WHERE opaque_id = ?`, opaqueID).Scan(&known)
	if err == nil {
		return nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: put contact: %w", err)
	}
	masked := redact.Number(number)
	_, err = s.db.ExecContext(ctx, `INSERT INTO contact (opaque_id, number, masked, seq)
		SELECT ?, ?, ?, 1 + (SELECT COUNT(*) FROM contact WHERE masked = ?)
		WHERE NOT EXISTS (SELECT 1 FROM contact WHERE opaque_id = ?)`, opaqueID, number, masked, masked, opaqueID)
	if err != nil {
		return fmt.Errorf("store: put contact: %w", err)
	}
	return nil
}

// ContactSeq is a contact's place among those whose masked numbers look
// the same (1 for the first; 0 if unknown).
func (s *Store) ContactSeq(ctx context.Context, opaqueID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM contact WHERE opaque_id = ?`, opaqueID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("store: contact seq: %w", err)
	}
	return n, nil
}

// ErrNoContact means the opaque id was never seen.
var ErrNoContact = errors.New("unknown contact")

// Contact returns the number behind an opaque id.
func (s *Store) Contact(ctx context.Context, opaqueID string) (string, error) {
	var n string
	err := s.db.QueryRowContext(ctx, `SELECT number FROM contact WHERE opaque_id = ?`, opaqueID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNoContact
	} else if err != nil {
		return "", fmt.Errorf("store: contact: %w", err)
	}
	return n, nil
}

// RevokeDevice marks a device revoked; new handshakes are refused from now on.
func (s *Store) RevokeDevice(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE device SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0`, s.ms(), id)
	if err != nil {
		return fmt.Errorf("store: revoke device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.GetDevice(ctx, id); err != nil {
			return err
		}
	}
	return nil
}
