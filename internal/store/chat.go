package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrNoMedia: no file is recorded for the message.
var ErrNoMedia = errors.New("no file for this message")

// MediaOut is a Matrix file waiting for the phone to pull it.
type MediaOut struct {
	MsgID    string
	URL      string // mxc://
	FileJSON string // event.EncryptedFileInfo as JSON, "" for plain media
}

// PutMediaOut records where a queued message's file lives.
func (s *Store) PutMediaOut(ctx context.Context, m MediaOut) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO media_out (msg_id, url, file_json, created_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (msg_id) DO NOTHING`, m.MsgID, m.URL, m.FileJSON, s.ms())
	if err != nil {
		return fmt.Errorf("store: media: %w", err)
	}
	return nil
}

// GetMediaOut returns a queued message's file; ErrNoMedia if none.
func (s *Store) GetMediaOut(ctx context.Context, msgID string) (MediaOut, error) {
	m := MediaOut{MsgID: msgID}
	err := s.db.QueryRowContext(ctx, `SELECT url, file_json FROM media_out WHERE msg_id = ?`, msgID).Scan(&m.URL, &m.FileJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNoMedia
	}
	if err != nil {
		return m, fmt.Errorf("store: media: %w", err)
	}
	return m, nil
}

// ChatKey names one conversation of one user: the bridgev2 login it
// belongs to (a paired phone, or one SIM of it: the portal's receiver) and
// the contact or group (the portal id). Two users who write to the same
// number have two chats with two sets of settings.
type ChatKey struct {
	Login   string
	Contact string
}

// Chat is what the bridge remembers about one conversation.
type Chat struct {
	ChatKey
	Transport string // how the phone last carried it
	Prefer    string // the user's transport choice ("" = phone decides)
	SIM       int
	GroupJSON string // wire.Group, for group chats
}

// Carrier is the transport the chat goes over: the user's choice, else what
// the phone last used ("" unknown).
func (c Chat) Carrier() string {
	if c.Prefer != "" {
		return c.Prefer
	}
	return c.Transport
}

// errNoLogin guards against a chat written without its owner.
var errNoLogin = errors.New("store: chat without a login")

// GetChat returns what is known of a chat (a zero Chat when nothing is).
func (s *Store) GetChat(ctx context.Context, k ChatKey) (Chat, error) {
	c := Chat{ChatKey: k}
	if k.Login == "" {
		return c, errNoLogin
	}
	err := s.db.QueryRowContext(ctx, `SELECT transport, prefer, sim, group_json FROM chat WHERE login_id = ? AND opaque_id = ?`,
		k.Login, k.Contact).Scan(&c.Transport, &c.Prefer, &c.SIM, &c.GroupJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("store: chat: %w", err)
	}
	return c, nil
}

// NoteTransport records the transport and SIM of a phone event in the chat
// and returns the transport seen before ("" if none).
func (s *Store) NoteTransport(ctx context.Context, k ChatKey, transport string, sim int) (prev string, err error) {
	if k.Login == "" {
		return "", errNoLogin
	}
	// Unchanged (nearly every message): a read, which takes no write lock,
	// so the phone's message does not queue behind other commits.
	var prevSIM int
	err = s.db.QueryRowContext(ctx, `SELECT transport, sim FROM chat WHERE login_id = ? AND opaque_id = ?`, k.Login, k.Contact).Scan(&prev, &prevSIM)
	switch {
	case err == nil && prev == transport && (sim <= 0 || sim == prevSIM):
		return prev, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("store: chat: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("store: chat: %w", err)
	}
	defer tx.Rollback()
	prev = ""
	err = tx.QueryRowContext(ctx, `SELECT transport FROM chat WHERE login_id = ? AND opaque_id = ?`, k.Login, k.Contact).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: chat: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO chat (login_id, opaque_id, transport, sim) VALUES (?, ?, ?, ?)
		ON CONFLICT (login_id, opaque_id) DO UPDATE SET transport = excluded.transport,
		sim = CASE WHEN excluded.sim > 0 THEN excluded.sim ELSE chat.sim END
		WHERE chat.transport != excluded.transport OR (excluded.sim > 0 AND chat.sim != excluded.sim)`, k.Login, k.Contact, transport, sim); err != nil {
		return "", fmt.Errorf("store: chat: %w", err)
	}
	return prev, tx.Commit()
}

// SetPrefer records the user's transport choice for a chat.
func (s *Store) SetPrefer(ctx context.Context, k ChatKey, prefer string) error {
	if k.Login == "" {
		return errNoLogin
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO chat (login_id, opaque_id, prefer) VALUES (?, ?, ?)
		ON CONFLICT (login_id, opaque_id) DO UPDATE SET prefer = excluded.prefer`, k.Login, k.Contact, prefer)
	if err != nil {
		return fmt.Errorf("store: chat: %w", err)
	}
	return nil
}

// PutGroup records a group chat's description.
func (s *Store) PutGroup(ctx context.Context, k ChatKey, groupJSON string) error {
	if k.Login == "" {
		return errNoLogin
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO chat (login_id, opaque_id, group_json) VALUES (?, ?, ?)
		ON CONFLICT (login_id, opaque_id) DO UPDATE SET group_json = excluded.group_json`, k.Login, k.Contact, groupJSON)
	if err != nil {
		return fmt.Errorf("store: chat: %w", err)
	}
	return nil
}

// LegacyChats lists the contacts of chat rows from before chats had an
// owner (schema v5 and older).
func (s *Store) LegacyChats(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT opaque_id FROM chat WHERE login_id = ''`)
	if err != nil {
		return nil, fmt.Errorf("store: legacy chats: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: legacy chats: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// SplitLegacyChats gives each ownerless chat row to every login that has
// that chat (owners: contact → logins; before, they all shared the row, so
// each keeps what it saw) and deletes the ownerless rows, in one
// transaction. A login that already has its own row keeps it.
func (s *Store) SplitLegacyChats(ctx context.Context, owners map[string][]string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: split chats: %w", err)
	}
	defer tx.Rollback()
	for contact, logins := range owners {
		for _, login := range logins {
			if login == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO chat (login_id, opaque_id, transport, prefer, sim, group_json)
				SELECT ?, opaque_id, transport, prefer, sim, group_json FROM chat WHERE login_id = '' AND opaque_id = ?
				ON CONFLICT (login_id, opaque_id) DO NOTHING`, login, contact); err != nil {
				return fmt.Errorf("store: split chats: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM chat WHERE login_id = ''`); err != nil {
		return fmt.Errorf("store: split chats: %w", err)
	}
	return tx.Commit()
}

// SetContactName records the name the phone's address book has for a number.
func (s *Store) SetContactName(ctx context.Context, opaqueID, name string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE contact SET name = ? WHERE opaque_id = ?`, name, opaqueID); err != nil {
		return fmt.Errorf("store: contact name: %w", err)
	}
	return nil
}

// ContactName returns the phone's name for a contact ("" if none).
func (s *Store) ContactName(ctx context.Context, opaqueID string) (string, error) {
	var n string
	err := s.db.QueryRowContext(ctx, `SELECT name FROM contact WHERE opaque_id = ?`, opaqueID).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: contact name: %w", err)
	}
	return n, nil
}

// ForgetBefore deletes per-message records older than t that no longer
// matter: finished send statuses, pulled-file locations, stale in-flight
// marks. Queued messages are kept (they expire by the queue TTL).
func (s *Store) ForgetBefore(ctx context.Context, t time.Time) (int64, error) {
	ms := t.UnixMilli()
	var total int64
	for _, q := range []string{
		`DELETE FROM sent_msg WHERE updated_ms < ? AND msg_id NOT IN (SELECT msg_id FROM outbox)`,
		`DELETE FROM media_out WHERE created_ms < ? AND msg_id NOT IN (SELECT msg_id FROM outbox)`,
		`DELETE FROM inflight WHERE started_ms < ?`,
	} {
		res, err := s.db.ExecContext(ctx, q, ms)
		if err != nil {
			return total, fmt.Errorf("store: retention: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// Unconfirmed lists messages queued before t that the phone has not yet
// reported as sent, and whose sender was not yet told so.
func (s *Store) Unconfirmed(ctx context.Context, before time.Time) ([]SentMsg, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT msg_id, device_id, room_id, sender, msg_type, state, created_ms FROM sent_msg
		WHERE state = 'queued' AND warned = 0 AND created_ms < ? ORDER BY created_ms`, before.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("store: unconfirmed: %w", err)
	}
	defer rows.Close()
	var out []SentMsg
	for rows.Next() {
		var m SentMsg
		var created int64
		if err := rows.Scan(&m.MsgID, &m.DeviceID, &m.RoomID, &m.Sender, &m.MsgType, &m.State, &created); err != nil {
			return nil, fmt.Errorf("store: unconfirmed: %w", err)
		}
		m.Created = time.UnixMilli(created)
		out = append(out, m)
	}
	return out, rows.Err()
}

// MarkWarned records that the sender was told a message is unconfirmed.
func (s *Store) MarkWarned(ctx context.Context, msgID string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sent_msg SET warned = 1 WHERE msg_id = ?`, msgID); err != nil {
		return fmt.Errorf("store: warned: %w", err)
	}
	return nil
}

// OldestUnconfirmed returns when the oldest message still waiting for the
// device's "sent" was queued (ok false if none).
func (s *Store) OldestUnconfirmed(ctx context.Context, deviceID string) (time.Time, bool, error) {
	var ms sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MIN(created_ms) FROM sent_msg WHERE device_id = ? AND state = 'queued'`, deviceID).Scan(&ms)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("store: unconfirmed: %w", err)
	}
	if !ms.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(ms.Int64), true, nil
}

// LastConfirmed returns when the phone last reported a message of the
// device's as sent (or further), if it did within what is still recorded.
func (s *Store) LastConfirmed(ctx context.Context, deviceID string) (time.Time, bool, error) {
	var ms sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MAX(updated_ms) FROM sent_msg WHERE device_id = ? AND state != 'queued'`, deviceID).Scan(&ms)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("store: last confirmed: %w", err)
	}
	if !ms.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(ms.Int64), true, nil
}
