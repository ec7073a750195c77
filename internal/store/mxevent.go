package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// EventHandled reports whether a Matrix event was already handed to the
// bridge (by an appservice transaction or by catch-up).
func (s *Store) EventHandled(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM mx_event WHERE event_id = ?`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("store: event lookup: %w", err)
	}
	return true, nil
}

// MarkEventHandled records that a Matrix event was handed to the bridge.
func (s *Store) MarkEventHandled(ctx context.Context, eventID, roomID string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO mx_event (event_id, room_id, handled_ms) VALUES (?, ?, ?)
		ON CONFLICT (event_id) DO NOTHING`, eventID, roomID, s.ms()); err != nil {
		return fmt.Errorf("store: mark event: %w", err)
	}
	return nil
}

// ForgetEventsBefore drops records of events handled before t and says how
// many: catch-up never looks that far back.
func (s *Store) ForgetEventsBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM mx_event WHERE handled_ms < ?`, t.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("store: forget events: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Value returns a named value (ok false when unset).
func (s *Store) Value(ctx context.Context, key string) (value string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT value FROM kv WHERE key = ?`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("store: read %s: %w", key, err)
	}
	return value, true, nil
}

// SetValue stores a named value; "" deletes it.
func (s *Store) SetValue(ctx context.Context, key, value string) error {
	var err error
	if value == "" {
		_, err = s.db.ExecContext(ctx, `DELETE FROM kv WHERE key = ?`, key)
	} else {
		_, err = s.db.ExecContext(ctx, `INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	}
	if err != nil {
		return fmt.Errorf("store: write %s: %w", key, err)
	}
	return nil
}
