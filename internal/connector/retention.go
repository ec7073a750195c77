package connector

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// retentionLoop forgets message mappings older than the retention setting,
// hourly: bridgev2's message and reaction rows (which Matrix event is which
// phone message) and our own per-message records. Message bodies are never
// stored; this removes the metadata of who wrote when.
func (c *Connector) retentionLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := c.applyRetention(ctx, time.Now().Add(-c.cfg.Retention)); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Err(err).Msg("Applying message retention failed; trying again in an hour")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// applyRetention deletes mappings of messages older than cutoff.
func (c *Connector) applyRetention(ctx context.Context, cutoff time.Time) error {
	db := c.br.DB.Database
	res, err := db.Exec(ctx, `DELETE FROM reaction WHERE bridge_id=$1 AND timestamp < $2`, c.br.ID, cutoff.UnixNano())
	if err != nil {
		return err
	}
	reactions, _ := res.RowsAffected()
	res, err = db.Exec(ctx, `DELETE FROM message WHERE bridge_id=$1 AND timestamp < $2`, c.br.ID, cutoff.UnixNano())
	if err != nil {
		return err
	}
	messages, _ := res.RowsAffected()
	ours, err := c.store.ForgetBefore(ctx, cutoff)
	if err != nil {
		return err
	}
	if messages+reactions+ours > 0 {
		zerolog.Ctx(ctx).Info().Int64("messages", messages).Int64("reactions", reactions).Int64("records", ours).
			Msg("Forgot message mappings past the retention period")
	}
	return nil
}
