// Package astxn answers the homeserver's appservice transactions durably:
// a transaction gets 200 only after every event in it was handled (and what
// that produced is committed to SQLite). Each message-like event is handed
// to the bridge once, whichever way it comes — in a transaction, replayed in
// another one, or found afterwards by catch-up (internal/catchup) — because
// handled event ids are kept in SQLite and checked under a per-room lock.
// mautrix-go's stock handler answers 200 once events sit in a memory
// channel, so a crash there loses them.
package astxn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
)

// Store remembers handled transactions and events.
type Store interface {
	// TxnDone: the transaction id was handled with this very body.
	TxnDone(ctx context.Context, id, bodySHA string) (bool, error)
	MarkTxnDone(ctx context.Context, id, bodySHA string, keep time.Duration) error
	EventHandled(ctx context.Context, eventID string) (bool, error)
	MarkEventHandled(ctx context.Context, eventID, roomID string) error
}

// Keep is how long handled transaction ids are remembered; homeservers
// retry for far less.
const Keep = 7 * 24 * time.Hour

// maxBody bounds a transaction (Synapse sends ≤ 100 events).
const maxBody = 64 << 20

// GateWait bounds how long a transaction waits for a catch-up pass under
// way (see Hold): past it the transaction is handled anyway, so a pass that
// cannot finish never stops the bridge. Homeservers give an appservice
// 30–60 s before they retry.
const GateWait = 25 * time.Second

// roomStripes: events of one room are handled one at a time (a room maps
// to one stripe); rooms a hostile homeserver makes up cost no memory.
const roomStripes = 64

// Handler serves PUT /_matrix/app/v1/transactions/{txnID}.
type Handler struct {
	AS    *appservice.AppService
	EP    *appservice.EventProcessor
	Store Store
	Log   zerolog.Logger
	// Claim, if set, is asked about each pushed event: false means it was
	// already handled another way (e.g. read from a room's history) and is
	// not dispatched.
	Claim func(ctx context.Context, evt *event.Event) bool
	// Own reports the bridge's own users (bot, ghosts): their events come
	// back to the bridge only to be ignored, so they are not recorded
	// (nil: every sender is recorded).
	Own func(id.UserID) bool
	// CatchUp, if set, runs a catch-up pass now (internal/catchup). It is
	// called before handling a transaction whose id skips one: a homeserver
	// that numbers its transactions (Synapse) has then left one behind.
	CatchUp func(ctx context.Context, reason string)
	// Quiet, if set, sees every membership event: the bridge's own users
	// that join get their notifications turned off.
	Quiet *Quiet

	rooms [roomStripes]sync.Mutex
	seed  maphash.Seed
	once  sync.Once
	gate  gate

	seqMu   sync.Mutex
	lastSeq uint64 // the last numbered transaction id seen (0: none yet)

	connected atomic.Bool // a connection has carried a transaction (see onNewConn)
	reusing   atomic.Bool // a connection has carried two
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
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) == 0 || len(body) > maxBody {
		mautrix.MNotJSON.WithMessage("unreadable or oversized transaction body").Write(w)
		return
	}
	sum := sha256.Sum256(body)
	bodySHA := hex.EncodeToString(sum[:])
	done, err := h.Store.TxnDone(ctx, txnID, bodySHA)
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
	// A catch-up pass under way delivers what the homeserver lost before
	// this transaction's events, so they keep their order.
	if !h.gate.wait(ctx, GateWait) {
		log.Warn().Dur("waited", GateWait).Msg("Catch-up pass still running; handling the transaction anyway")
	}
	if h.CatchUp != nil && h.onNewConn(r.Context()) {
		// The homeserver opened a new connection for this transaction: it
		// may have restarted, and one that keeps its queue on disk
		// (Dendrite) pushes what it had queued the moment it is back —
		// possibly after losing older ones. Catch-up delivers those first.
		log.Info().Msg("Transaction on a new homeserver connection; catching up first")
		h.CatchUp(ctx, "homeserver reconnected")
	}
	if last, gap := h.skipsOne(txnID); gap && h.CatchUp != nil {
		// Synapse 1.163, recovering from an appservice it had marked as
		// down, can leave a transaction it created meanwhile unsent for
		// good (the recoverer finished just before the transaction was
		// stored, and the sender had already seen the service as down).
		// Its events are in the rooms: catch-up delivers them now, before
		// this transaction's newer ones.
		log.Warn().Uint64("last_transaction_id", last).Msg("Transaction id skips one: the homeserver left one behind; catching up first")
		h.CatchUp(ctx, "transaction gap")
	}
	h.handle(ctx, txn.Events, event.UnknownEventType)
	// Typing and receipts (MSC2409): stable field first, then the unstable one.
	if txn.EphemeralEvents != nil {
		h.handle(ctx, txn.EphemeralEvents, event.EphemeralEventType)
	} else if txn.MSC2409EphemeralEvents != nil {
		h.handle(ctx, txn.MSC2409EphemeralEvents, event.EphemeralEventType)
	}
	if err := h.Store.MarkTxnDone(ctx, txnID, bodySHA, Keep); err != nil {
		// Events are handled and recorded; a retry finds them so.
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

// connKey carries a connection's record in its requests' contexts.
type connKey struct{}

// conn is what a connection from the homeserver has carried.
type conn struct{ transactions atomic.Int64 }

// ConnContext is http.Server.ConnContext for the appservice listener: it
// lets the handler tell a transaction that opens a connection.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &conn{})
}

// onNewConn reports whether this transaction is the first on its connection
// while an earlier connection carried one: the homeserver reconnected
// (after a restart, or an idle timeout). The first connection of a run is
// covered by catch-up's start pass. A homeserver that does not keep its
// connections (a new one per transaction) would make this a pass per
// transaction, so it counts only once a connection carried two.
func (h *Handler) onNewConn(ctx context.Context) bool {
	c, _ := ctx.Value(connKey{}).(*conn)
	if c == nil {
		return false
	}
	switch c.transactions.Add(1) {
	case 1:
		return h.reusing.Load() && h.connected.Swap(true)
	case 2:
		h.reusing.Store(true)
	}
	h.connected.Store(true)
	return false
}

// maxSeqGap: a numbered transaction id further ahead than this is not a
// sequence (Dendrite names transactions after nanosecond timestamps).
const maxSeqGap = 1000

// skipsOne reports whether txnID is a number more than one past the last
// numbered id seen, which it returns (and remembers the highest).
func (h *Handler) skipsOne(txnID string) (last uint64, gap bool) {
	n, err := strconv.ParseUint(txnID, 10, 64)
	if err != nil {
		return 0, false
	}
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	last = h.lastSeq
	if n > last {
		h.lastSeq = n
	}
	return last, last > 0 && n > last+1 && n-last <= maxSeqGap
}

// Hold makes transactions wait (at most GateWait) until Release: catch-up
// holds them while it delivers what the homeserver never sent, so a live
// message cannot overtake an older lost one. Hold and Release may be
// called from one goroutine only (the catch-up runner).
func (h *Handler) Hold() { h.gate.hold() }

// Release lets held transactions through.
func (h *Handler) Release() { h.gate.release() }

// Handled reports whether an event was handed to the bridge already (a
// lookup error counts as not handled: handing again is caught downstream).
func (h *Handler) Handled(ctx context.Context, eventID id.EventID) bool {
	done, err := h.Store.EventHandled(ctx, string(eventID))
	return err == nil && done
}

// DeliverMissed hands events that catch-up found in a room's timeline to
// the bridge, oldest first, each unless it was handled already; it returns
// how many it handed. Events are as /sync or /messages give them.
func (h *Handler) DeliverMissed(ctx context.Context, room id.RoomID, evts []*event.Event) int {
	for _, evt := range evts {
		evt.RoomID = room
	}
	return h.handle(ctx, evts, event.UnknownEventType)
}

// Tracked says which events are handled once by event id and looked for
// by catch-up: what a Matrix user sends into a portal, never state.
func Tracked(evt *event.Event) bool {
	if evt.StateKey != nil {
		return false
	}
	switch evt.Type.Type {
	case event.EventMessage.Type, event.EventEncrypted.Type, event.EventReaction.Type,
		event.EventRedaction.Type, event.EventSticker.Type:
		return true
	}
	return false
}

// handle dispatches events one by one and waits for each (the event
// processor runs in Sync mode and portals handle events inline). It returns
// how many tracked events it handed on.
func (h *Handler) handle(ctx context.Context, evts []*event.Event, class event.TypeClass) int {
	log := zerolog.Ctx(ctx)
	handed := 0
	for _, evt := range evts {
		if evt == nil {
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
		if class != event.EphemeralEventType && evt.ID != "" && Tracked(evt) && (h.Own == nil || !h.Own(evt.Sender)) {
			if h.dispatchOnce(ctx, evt) {
				handed++
			}
			continue
		}
		if evt.Type.IsState() {
			mautrix.UpdateStateStore(ctx, h.AS.StateStore, evt)
			h.Quiet.Member(evt)
		}
		if class == event.UnknownEventType && h.Claim != nil && !h.Claim(ctx, evt) {
			log.Debug().Stringer("event_id", evt.ID).Msg("Event already handled; not dispatched again")
			continue
		}
		h.EP.Dispatch(ctx, evt)
	}
	return handed
}

// dispatchOnce hands evt to the bridge unless it was handled already, and
// records it. The room lock makes check, dispatch and record one step for
// both paths. A crash between dispatch and record hands it again after a
// restart; bridgev2's message dedupe and the outbox's unique key catch that.
func (h *Handler) dispatchOnce(ctx context.Context, evt *event.Event) bool {
	mu := h.roomLock(evt.RoomID)
	mu.Lock()
	defer mu.Unlock()
	log := zerolog.Ctx(ctx).With().Stringer("event_id", evt.ID).Logger()
	done, err := h.Store.EventHandled(ctx, string(evt.ID))
	if err != nil {
		log.Err(err).Msg("Could not look up whether the event was handled; handling it (downstream dedupe applies)")
	} else if done {
		log.Debug().Msg("Event already handled")
		return false
	}
	if h.Claim != nil && !h.Claim(ctx, evt) {
		log.Debug().Msg("Event already handled another way; not dispatched again")
	} else {
		h.EP.Dispatch(ctx, evt)
	}
	if err := h.Store.MarkEventHandled(ctx, string(evt.ID), string(evt.RoomID)); err != nil {
		log.Err(err).Msg("Could not record the event as handled")
	}
	return true
}

func (h *Handler) roomLock(room id.RoomID) *sync.Mutex {
	h.once.Do(func() { h.seed = maphash.MakeSeed() })
	return &h.rooms[maphash.String(h.seed, string(room))%roomStripes]
}

// gate is open unless catch-up holds it; the zero value is open.
type gate struct {
	mu      sync.Mutex
	held    chan struct{} // closed on release; nil while open
	waiting atomic.Int32  // transactions waiting (for tests and logs)
}

func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		g.held = make(chan struct{})
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

// wait returns true once the gate is open, false after max.
func (g *gate) wait(ctx context.Context, max time.Duration) bool {
	g.mu.Lock()
	held := g.held
	g.mu.Unlock()
	if held == nil {
		return true
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-held:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}
