// Package astxn answers the homeserver's appservice transactions durably:
// a transaction gets 200 only after every event in it was handled (and what
// that produced is committed to SQLite), and handled transaction ids are
// kept in SQLite so a replay after a restart is a no-op. mautrix-go's stock
// handler answers 200 once events sit in a memory channel, so a crash there
// loses them.
package astxn

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
)

// TxnStore remembers handled transaction ids.
type TxnStore interface {
	TxnDone(ctx context.Context, id string) (bool, error)
	MarkTxnDone(ctx context.Context, id string, keep time.Duration) error
}

// Keep is how long handled ids are remembered; homeservers retry for far less.
const Keep = 7 * 24 * time.Hour

// maxBody bounds a transaction (Synapse sends ≤ 100 events).
const maxBody = 64 << 20

// Handler serves PUT /_matrix/app/v1/transactions/{txnID}.
type Handler struct {
	AS    *appservice.AppService
	EP    *appservice.EventProcessor
	Store TxnStore
	Log   zerolog.Logger
	// Claim, if set, is asked about each pushed event: false means it was
	// already handled another way (e.g. read from a room's history) and is
	// not dispatched.
	Claim func(ctx context.Context, evt *event.Event) bool

	redMu   sync.Mutex
	redSeen map[id.EventID]struct{}
}

// Wrap routes transactions to h and everything else to the appservice router.
func Wrap(router http.Handler, h *Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("PUT /_matrix/app/v1/transactions/{txnID}", h)
	mux.Handle("PUT /transactions/{txnID}", h) // legacy path some homeservers still use
	mux.Handle("/", router)
	return mux
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.AS.CheckServerToken(w, r) {
		return
	}
	txnID := r.PathValue("txnID")
	if txnID == "" {
		mautrix.MInvalidParam.WithMessage("Missing transaction ID").Write(w)
		return
	}
	// Handling must finish even if the homeserver hangs up: it will retry,
	// and the retry must find either nothing done or everything done.
	ctx := context.WithoutCancel(r.Context())
	log := h.Log.With().Str("transaction_id", txnID).Logger()
	ctx = log.WithContext(ctx)
	done, err := h.Store.TxnDone(ctx, txnID)
	if err != nil {
		log.Err(err).Msg("Transaction lookup failed; asking the homeserver to retry")
		mautrix.MUnknown.WithMessage("database unavailable").WithStatus(http.StatusServiceUnavailable).Write(w)
		return
	}
	if done {
		log.Debug().Msg("Replayed transaction ignored")
		exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) == 0 || len(body) > maxBody {
		mautrix.MNotJSON.WithMessage("unreadable or oversized transaction body").Write(w)
		return
	}
	var txn appservice.Transaction
	if err := json.Unmarshal(body, &txn); err != nil {
		log.Warn().Err(err).Msg("Malformed transaction refused")
		mautrix.MBadJSON.WithMessage("malformed transaction").Write(w)
		return
	}
	if hoptrace.On() {
		for _, evt := range txn.Events {
			if evt != nil {
				hoptrace.Mark(hoptrace.Pushed, string(evt.ID))
			}
		}
	}
	h.handle(ctx, txn.Events, event.UnknownEventType)
	// Typing and receipts (MSC2409): stable field first, then the unstable one.
	if txn.EphemeralEvents != nil {
		h.handle(ctx, txn.EphemeralEvents, event.EphemeralEventType)
	} else if txn.MSC2409EphemeralEvents != nil {
		h.handle(ctx, txn.MSC2409EphemeralEvents, event.EphemeralEventType)
	}
	if err := h.Store.MarkTxnDone(ctx, txnID, Keep); err != nil {
		// Events are handled; a replay would be deduplicated downstream
		// (outbox ids, bridgev2's message dedupe), so a retry is safe.
		log.Err(err).Msg("Recording transaction failed; the homeserver will retry it")
		mautrix.MUnknown.WithMessage("database unavailable").WithStatus(http.StatusServiceUnavailable).Write(w)
		return
	}
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	if hoptrace.On() {
		for _, evt := range txn.Events {
			if evt != nil {
				hoptrace.Mark(hoptrace.Answered, string(evt.ID))
			}
		}
	}
}

// handle dispatches events one by one and waits for each (the event
// processor runs in Sync mode and portals handle events inline).
func (h *Handler) handle(ctx context.Context, evts []*event.Event, class event.TypeClass) {
	log := zerolog.Ctx(ctx)
	for _, evt := range evts {
		if evt == nil {
			continue
		}
		if class == event.UnknownEventType && evt.Type == event.EventRedaction && !h.firstRedaction(evt.ID) {
			continue
		}

		evt.Mautrix.ReceivedAt = time.Now()
		if class == event.EphemeralEventType {
			evt.Mautrix.EventSource = event.SourceEphemeral
			evt.Type.Class = event.EphemeralEventType
		} else if evt.StateKey != nil {
			evt.Mautrix.EventSource = event.SourceTimeline & event.SourceJoin
			evt.Type.Class = event.StateEventType
		} else {
			evt.Mautrix.EventSource = event.SourceTimeline
			evt.Type.Class = event.MessageEventType
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
			log.Warn().Err(err).Stringer("event_id", evt.ID).Str("event_type", evt.Type.Type).Msg("Event content does not parse")
		}
		if evt.Type.IsState() {
			mautrix.UpdateStateStore(ctx, h.AS.StateStore, evt)
		}
		if class == event.UnknownEventType && h.Claim != nil && !h.Claim(ctx, evt) {
			log.Debug().Stringer("event_id", evt.ID).Msg("Event already handled; not dispatched again")
			continue
		}
		h.EP.Dispatch(ctx, evt)
	}
}
