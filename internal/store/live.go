package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetConnected records a device's connection state for `rcsgate status`,
// which runs in another process.
func (s *Store) SetConnected(ctx context.Context, id string, connected bool) error {
	var ms int64
	if connected {
		ms = s.ms()
	}
	_, err := s.db.ExecContext(ctx, `UPDATE device SET connected_ms = ?, last_seen_ms = ? WHERE id = ?`, ms, s.ms(), id)
	if err != nil {
		return fmt.Errorf("store: set connected: %w", err)
	}
	return nil
}

// ClearConnected marks every device disconnected (daemon start: nothing is
// connected yet, whatever the last run recorded).
func (s *Store) ClearConnected(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE device SET connected_ms = 0`); err != nil {
		return fmt.Errorf("store: clear connected: %w", err)
	}
	return nil
}

// SetLive records RTT and the agent's queue depths from its last pong.
func (s *Store) SetLive(ctx context.Context, id string, rtt time.Duration, agentOut, agentIn int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE device SET rtt_us = ?, agent_out = ?, agent_in = ?, last_seen_ms = ? WHERE id = ?`,
		rtt.Microseconds(), agentOut, agentIn, s.ms(), id)
	if err != nil {
		return fmt.Errorf("store: set live: %w", err)
	}
	return nil
}

// RenameDevice changes a device's display name.
func (s *Store) RenameDevice(ctx context.Context, id, name string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE device SET name = ? WHERE id = ?`, name, id)
	if err != nil {
		return fmt.Errorf("store: rename device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoDevice
	}
	return nil
}

// RevokedSince lists devices revoked after t (the daemon polls this so a
// revocation from the CLI closes the live connection at once).
func (s *Store) RevokedSince(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM device WHERE revoked_ms > ?`, t.UnixMilli()-1)
	if err != nil {
		return nil, fmt.Errorf("store: revoked: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// TxnDone reports whether an appservice transaction was already handled
// with this body (its SHA-256): the same id with other events is not a
// replay (Dendrite names a transaction after its first event, and a retry
// may carry more).
func (s *Store) TxnDone(ctx context.Context, id, bodySHA string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM as_txn WHERE id = ? AND body_sha = ?`, id, bodySHA).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("store: txn lookup: %w", err)
	}
	return true, nil
}

// MarkTxnDone records a handled transaction and forgets ones older than keep.
func (s *Store) MarkTxnDone(ctx context.Context, id, bodySHA string, keep time.Duration) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO as_txn (id, done_ms, body_sha) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET done_ms = excluded.done_ms, body_sha = excluded.body_sha`, id, s.ms(), bodySHA); err != nil {
		return fmt.Errorf("store: mark txn: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM as_txn WHERE done_ms < ?`, s.now().Add(-keep).UnixMilli()); err != nil {
		return fmt.Errorf("store: prune txns: %w", err)
	}
	return nil
}

// Delivery states of a message from Matrix.
const (
	SentQueued = "queued"
	SentFailed = "failed"
)

// SentMsg is a Matrix message on its way to a phone, kept so its status can
// be reported back into the right room.
type SentMsg struct {
	MsgID, DeviceID, RoomID, Sender, MsgType, State string
	Created                                         time.Time
}

// EnqueueSent stores the outbox entry and its status record in one
// transaction, refusing when the device's queue already holds limit messages.
func (s *Store) EnqueueSent(ctx context.Context, m SentMsg, payload []byte, limit int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	defer tx.Rollback()
	var depth int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE device_id = ?`, m.DeviceID).Scan(&depth); err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	if depth >= limit {
		return fmt.Errorf("%w: %d messages already wait for this phone", ErrQueueFull, depth)
	}
	now := s.ms()
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (device_id, msg_id, payload, created_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (device_id, msg_id) DO NOTHING`, m.DeviceID, m.MsgID, payload, now); err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	if m.RoomID == "" { // not tracked: read markers and the like have no status
		return tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sent_msg (msg_id, device_id, room_id, sender, msg_type, state, created_ms, updated_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		m.MsgID, m.DeviceID, m.RoomID, m.Sender, m.MsgType, SentQueued, now, now); err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	return tx.Commit()
}

// ErrQueueFull: the device's offline queue is at its limit.
var ErrQueueFull = errors.New("the phone's queue is full")

// GetSent loads a status record.
func (s *Store) GetSent(ctx context.Context, msgID string) (SentMsg, error) {
	var m SentMsg
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT msg_id, device_id, room_id, sender, msg_type, state, created_ms FROM sent_msg WHERE msg_id = ?`, msgID).
		Scan(&m.MsgID, &m.DeviceID, &m.RoomID, &m.Sender, &m.MsgType, &m.State, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNoSent
	} else if err != nil {
		return m, fmt.Errorf("store: get sent: %w", err)
	}
	m.Created = time.UnixMilli(created)
	return m, nil
}

// ErrNoSent: no status record for that id (never sent, or pruned).
var ErrNoSent = errors.New("unknown sent message")

var stateRank = map[string]int{SentQueued: 0, "sent": 1, "delivered": 2, "read": 3, SentFailed: 4}

// AdvanceSent moves a message to a later state; it reports false when the
// state would go backwards or repeat (a resent status), so callers report
// each change once.
func (s *Store) AdvanceSent(ctx context.Context, msgID, state string) (bool, error) {
	rank, ok := stateRank[state]
	if !ok {
		return false, fmt.Errorf("store: unknown state %q", state)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sent_msg SET state = ?, updated_ms = ? WHERE msg_id = ? AND
		(CASE state WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 4 END) < ?`,
		state, s.ms(), msgID, rank)
	if err != nil {
		return false, fmt.Errorf("store: advance sent: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ExpireOutbox removes messages that waited longer than ttl and returns
// their ids, so each gets a failed status.
func (s *Store) ExpireOutbox(ctx context.Context, ttl time.Duration) ([]string, error) {
	cutoff := s.now().Add(-ttl).UnixMilli()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: expire: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT msg_id FROM outbox WHERE created_ms < ?`, cutoff)
	if err != nil {
		return nil, fmt.Errorf("store: expire: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE created_ms < ?`, cutoff); err != nil {
		return nil, fmt.Errorf("store: expire: %w", err)
	}
	// Forget finished status records after a while; they only serve late statuses.
	if _, err := tx.ExecContext(ctx, `DELETE FROM sent_msg WHERE updated_ms < ? AND state != 'queued'`, cutoff); err != nil {
		return nil, fmt.Errorf("store: expire: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: expire: %w", err)
	}
	if len(ids) > 0 {
		_ = s.Checkpoint(ctx) // best effort: the expired texts leave the WAL too (a busy WAL goes at the next)
	}
	return ids, nil
}

// MarkInflight records that a phone message is about to be sent to Matrix.
func (s *Store) MarkInflight(ctx context.Context, msgID string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO inflight (msg_id, started_ms) VALUES (?, ?) ON CONFLICT DO NOTHING`, msgID, s.ms())
	if err != nil {
		return fmt.Errorf("store: mark inflight: %w", err)
	}
	return nil
}

// ClearInflight forgets a message once bridgev2 has recorded it.
func (s *Store) ClearInflight(ctx context.Context, msgID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM inflight WHERE msg_id = ?`, msgID); err != nil {
		return fmt.Errorf("store: clear inflight: %w", err)
	}
	return nil
}

// InflightSince returns when the send of msgID started, if it is in flight.
func (s *Store) InflightSince(ctx context.Context, msgID string) (time.Time, bool, error) {
	var started int64
	err := s.db.QueryRowContext(ctx, `SELECT started_ms FROM inflight WHERE msg_id = ?`, msgID).Scan(&started)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	} else if err != nil {
		return time.Time{}, false, fmt.Errorf("store: inflight: %w", err)
	}
	return time.UnixMilli(started), true, nil
}
