package astxn

import (
	"context"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SyncEphemeral runs the bridge bot's /sync for typing notices, read
// receipts and redactions, for homeservers that do not push them to appservices (MSC2409;
// Dendrite does not). The bot sits in every portal, so it sees them all.
// Events go through the same dispatch as pushed ones; a receipt seen both
// ways reaches the phone once (its outbox id is the event read). It returns
// when ctx ends.
func (h *Handler) SyncEphemeral(ctx context.Context, cli *mautrix.Client) {
	log := h.Log.With().Str("loop", "bot_sync").Logger()
	ctx = log.WithContext(ctx)
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
				if evt.Type == event.EventRedaction { // handle() drops ones already seen
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
		if err := cli.SyncWithContext(ctx); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("Bot sync for typing and receipts failed; retrying")
			t := time.NewTimer(5 * time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
}

// firstRedaction reports whether a redaction is seen for the first time, by
// either path (pushed or synced), so it is handled once.
func (h *Handler) firstRedaction(evtID id.EventID) bool {
	h.redMu.Lock()
	defer h.redMu.Unlock()
	if h.redSeen == nil {
		h.redSeen = map[id.EventID]struct{}{}
	}
	if _, ok := h.redSeen[evtID]; ok {
		return false
	}
	if len(h.redSeen) >= 4096 { // bounded: forget the lot, a late duplicate fails harmlessly
		clear(h.redSeen)
	}
	h.redSeen[evtID] = struct{}{}
	return true
}
