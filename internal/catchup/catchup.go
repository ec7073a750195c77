// Package catchup finds Matrix messages in portals that the homeserver
// accepted but never pushed to the bridge by appservice transaction — a
// homeserver that crashed with its queue in memory, or that gave a
// transaction up — and hands them to the bridge, once each, decrypting
// where needed (they go through the same event processor as pushed ones).
//
// How: the bot's own sync device asks /sync for everything since a
// checkpoint (a sync token kept in SQLite), in the order the homeserver
// stored it; a room with more than a page of news is paged through with
// /messages from the checkpoint on, oldest first. Each pass is bounded by age and count (Config). A pass runs at
// start, when the homeserver comes back after the watch's long-poll on it
// broke (it died or restarted), when a transaction id shows the homeserver
// left one behind (PassNow, before that transaction is handled), and every
// Config.Interval as a safety net. While a start or come-back pass runs,
// transactions wait (astxn.Hold), so a live message never overtakes an
// older lost one.
package catchup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxAge    = 24 * time.Hour
	DefaultMaxEvents = 500
	DefaultInterval  = 10 * time.Minute
)

// Config bounds catch-up.
type Config struct {
	// MaxAge: messages older than this are not delivered late (0: 24 h;
	// negative: catch-up off).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxEvents: at most this many missed messages per portal per round,
	// oldest first; a pass runs up to 10 rounds, and what is left waits for
	// the next pass (0: 500).
	MaxEvents int `yaml:"max_events"`
	// Interval between safety passes (0: 10 min; negative: only at start
	// and when the homeserver comes back).
	Interval time.Duration `yaml:"interval"`
}

// Enabled reports whether catch-up runs at all.
func (c Config) Enabled() bool { return c.MaxAge >= 0 }

func (c Config) withDefaults() Config {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	return c
}

// Deliverer hands found events to the bridge (astxn.Handler).
type Deliverer interface {
	// DeliverMissed hands the events, oldest first, each unless already
	// handled; it returns how many it handed.
	DeliverMissed(ctx context.Context, room id.RoomID, evts []*event.Event) int
	// Handled reports whether an event was handed already.
	Handled(ctx context.Context, eventID id.EventID) bool
	// Hold makes appservice transactions wait until Release.
	Hold()
	Release()
}

// Store keeps the checkpoint and forgets old handled-event records.
type Store interface {
	Value(ctx context.Context, key string) (string, bool, error)
	SetValue(ctx context.Context, key, value string) error
	ForgetEventsBefore(ctx context.Context, t time.Time) (int64, error)
}

// Runner runs catch-up passes. Fill every field but Now.
type Runner struct {
	Cfg Config
	// Client returns the bot's sync device (astxn.SyncDevice); it is called
	// again after the homeserver refused the device's token.
	Client func(ctx context.Context) (*mautrix.Client, error)
	// WatchClient, if set, returns the client whose long-poll watches the
	// homeserver (nil: Client's). A user in no room is best: the homeserver
	// computes a sync for each of the bot's long-polls at every event in
	// any portal — work on the message's path — and wakes a roomless
	// user's only for its own news.
	WatchClient func(ctx context.Context) (*mautrix.Client, error)
	Store       Store
	Deliver     Deliverer
	// Portals lists the portal rooms; nothing elsewhere is delivered late
	// (a bot command replayed in a management room could act twice).
	Portals func(ctx context.Context) (map[id.RoomID]bool, error)
	// Own reports the bridge's own users (bot, ghosts): theirs is never
	// delivered back.
	Own func(id.UserID) bool
	Log zerolog.Logger
	Now func() time.Time

	passMu sync.Mutex                     // one pass at a time
	cli    atomic.Pointer[mautrix.Client] // the client Run uses, for PassNow
}

// Result describes one pass.
type Result struct {
	Reason    string        // start, homeserver back, periodic
	Rooms     int           // portals with news since the checkpoint
	Seen      int           // their tracked events since the checkpoint
	Missed    int           // of those, not handed to the bridge before
	Delivered int           // handed to the bridge now (never arrived by transaction)
	Gaps      int           // rooms paged back with /messages
	Paged     int           // events those pages brought
	TooOld    int           // older than MaxAge: not delivered
	OverLimit int           // past MaxEvents in a room: left for the next round
	More      bool          // a room had more than one round takes: run again
	Took      time.Duration // wall time of the pass
	Init      bool          // first pass ever: only took a checkpoint
}

// checkpoint is where the last pass ended.
type checkpoint struct {
	Token string `json:"token"`
	AtMS  int64  `json:"at_ms"` // when it was taken (bridge clock)
}

const checkpointKey = "catchup_checkpoint"

// passMarkType is the bot's account data a pass writes before its sync.
const passMarkType = "net.rcsgate.catchup"

// clockSkew widens the time bounds: homeserver timestamps come from another
// clock (usually the same machine's).
const clockSkew = time.Minute

// Pages of /messages when paging through a room: events per request, and
// at most this many requests per room and round (MaxEvents missed messages
// found end it sooner).
const (
	pageSize = 100
	maxPages = 20
)

// Poll timing for the watch on the homeserver.
const (
	watchTimeout = 30 * time.Second
	minPoll      = 250 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// trackedTypes are what astxn.Tracked accepts: what users send, no state.
var trackedTypes = []event.Type{event.EventMessage, event.EventEncrypted, event.EventReaction, event.EventRedaction, event.EventSticker}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run holds transactions until the start pass is done, then watches the
// homeserver until ctx ends. The caller holds transactions (Deliver.Hold)
// before the appservice listener serves, so none slips in first.
func (r *Runner) Run(ctx context.Context) {
	cfg := r.Cfg.withDefaults()
	if !r.Cfg.Enabled() {
		r.Deliver.Release()
		return
	}
	log := r.Log
	cli := r.client(ctx)
	if cli == nil {
		r.Deliver.Release()
		return
	}
	r.cli.Store(cli)
	cli = r.passOrLog(ctx, cli, "start")
	r.cli.Store(cli)
	r.Deliver.Release()
	watch := r.watchClient(ctx, cli)
	if watch == nil {
		return
	}

	last := r.now()
	var since string
	for ctx.Err() == nil {
		started := time.Now()
		next, err := r.poll(ctx, watch, since)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			since = next
		case errors.Is(err, mautrix.MUnknownToken):
			log.Warn().Err(err).Msg("Homeserver no longer knows the watch's device; logging it in again")
			if r.WatchClient == nil {
				if cli = r.client(ctx); cli == nil {
					return
				}
				r.cli.Store(cli)
			}
			if watch = r.watchClient(ctx, cli); watch == nil {
				return
			}
			continue
		default:
			// The long-poll broke: the homeserver died or restarted. Until
			// the pass after it is back, transactions wait.
			log.Warn().Err(err).Msg("Homeserver unreachable; catching up once it is back")
			r.Deliver.Hold()
			if since, err = r.waitBack(ctx, watch); err != nil {
				r.Deliver.Release()
				return
			}
			cli = r.passOrLog(ctx, cli, "homeserver back")
			r.cli.Store(cli)
			r.Deliver.Release()
			last = r.now()
			continue
		}
		if cfg.Interval > 0 && r.now().Sub(last) >= cfg.Interval {
			cli = r.passOrLog(ctx, cli, "periodic")
			r.cli.Store(cli)
			last = r.now()
		}
		if d := time.Since(started); d < minPoll {
			if !ctxutil.Sleep(ctx, minPoll-d) {
				return
			}
		}
	}
}

// PassNow runs a pass at once (astxn calls it when the homeserver left a
// transaction behind); a no-op before Run has its client or when off.
func (r *Runner) PassNow(ctx context.Context, reason string) {
	if !r.Cfg.Enabled() {
		return
	}
	if cli := r.cli.Load(); cli != nil {
		r.passOrLog(ctx, cli, reason)
	}
}

// client gets the sync device, retrying with backoff; nil when ctx ended.
func (r *Runner) client(ctx context.Context) *mautrix.Client {
	return r.retry(ctx, r.Client, "Bot sync device unavailable; catch-up waits")
}

// watchClient is the client that watches the homeserver: WatchClient's, or
// cli when there is none; nil when ctx ended.
func (r *Runner) watchClient(ctx context.Context, cli *mautrix.Client) *mautrix.Client {
	if r.WatchClient == nil {
		return cli
	}
	return r.retry(ctx, r.WatchClient, "Catch-up's watch device unavailable; it waits")
}

// retry calls get until it gives a client, with backoff; nil when ctx ended.
func (r *Runner) retry(ctx context.Context, get func(context.Context) (*mautrix.Client, error), msg string) *mautrix.Client {
	wait := ctxutil.Doubling{Next: minPoll, Max: maxBackoff}
	for {
		cli, err := get(ctx)
		if err == nil {
			return cli
		}
		r.Log.Warn().Err(err).Dur("retry_in", wait.Next).Msg(msg)
		if !wait.Wait(ctx) {
			return nil
		}
	}
}

// passOrLog runs a pass (in rounds, while a portal has more missed
// messages than one round delivers, at most maxRounds) and logs each
// round; a refused device gets a new login for next time.
func (r *Runner) passOrLog(ctx context.Context, cli *mautrix.Client, reason string) *mautrix.Client {
	for round := 1; ; round++ {
		res, err := r.Pass(ctx, cli, reason)
		if err != nil {
			r.Log.Err(err).Str("reason", reason).Msg("Catch-up pass failed; the next one covers it")
			if errors.Is(err, mautrix.MUnknownToken) {
				if fresh := r.client(ctx); fresh != nil {
					return fresh
				}
			}
			return cli
		}
		r.logPass(res, reason, round)
		if !res.More || ctx.Err() != nil {
			return cli
		}
		if round == maxRounds {
			r.Log.Warn().Str("reason", reason).Int("rounds", round).
				Msg("More missed messages than catch-up delivers at once; the next pass goes on from here")
			return cli
		}
	}
}

// maxRounds bounds the rounds of one pass (each up to MaxEvents per portal).
const maxRounds = 10

func (r *Runner) logPass(res Result, reason string, round int) {
	ev := r.Log.Debug()
	if res.Delivered > 0 || res.TooOld > 0 || res.More || reason != "periodic" {
		ev = r.Log.Info()
	}
	ev.Str("reason", reason).Int("round", round).Int("rooms", res.Rooms).Int("seen", res.Seen).Int("missed", res.Missed).
		Int("delivered", res.Delivered).Int("gaps", res.Gaps).Int("paged", res.Paged).Int("too_old", res.TooOld).
		Int("left_for_next_round", res.OverLimit).Bool("init", res.Init).Dur("took", res.Took).Msg("Catch-up pass done")
}

// waitBack polls until the homeserver answers again and returns a fresh
// long-poll token.
func (r *Runner) waitBack(ctx context.Context, cli *mautrix.Client) (string, error) {
	wait := ctxutil.Doubling{Next: minPoll, Max: maxBackoff}
	for {
		if !wait.Wait(ctx) {
			return "", ctx.Err()
		}
		next, err := r.poll(ctx, cli, "")
		if err == nil {
			r.Log.Info().Msg("Homeserver answers again")
			return next, nil
		}
	}
}

// poll is one long-poll /sync that asks for nothing: its only job is to
// break when the homeserver goes away. since "" asks at once.
func (r *Runner) poll(ctx context.Context, cli *mautrix.Client, since string) (string, error) {
	req := mautrix.ReqSync{Since: since, FilterID: watchFilter}
	if since != "" {
		req.Timeout = int(watchTimeout / time.Millisecond)
	}
	resp, err := cli.FullSyncRequest(ctx, req)
	if err != nil {
		return "", err
	}
	return resp.NextBatch, nil
}

// Pass delivers what arrived since the checkpoint and was not handled, and
// moves the checkpoint on. The first pass ever only takes a checkpoint:
// there is no record of what was handled before.
func (r *Runner) Pass(ctx context.Context, cli *mautrix.Client, reason string) (res Result, err error) {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	cfg := r.Cfg.withDefaults()
	start := r.now()
	res.Reason = reason
	defer func() { res.Took = r.now().Sub(start) }()
	cp, ok, err := r.checkpoint(ctx)
	if err != nil {
		return res, err
	}
	if !ok {
		resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: initFilter})
		if err != nil {
			return res, fmt.Errorf("catch-up: first checkpoint: %w", err)
		}
		res.Init = true
		return res, r.saveCheckpoint(ctx, checkpoint{Token: resp.NextBatch, AtMS: start.UnixMilli()})
	}
	// tuwunel holds a sync with nothing to say for at least its
	// client_sync_timeout_min (5 s), whatever timeout we ask: a mark in
	// the bot's account data gives this one something to say.
	if err := cli.SetAccountData(ctx, passMarkType, map[string]int64{"at_ms": start.UnixMilli()}); err != nil {
		r.Log.Debug().Err(err).Msg("Could not set the catch-up mark; a pass may wait on the homeserver")
	}
	resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: cp.Token, FilterID: passFilter})
	if err != nil {
		if badToken(err) {
			// A homeserver reset or restored from a backup: start over.
			r.Log.Warn().Err(err).Msg("Homeserver refused the catch-up checkpoint; taking a new one")
			_ = r.Store.SetValue(ctx, checkpointKey, "")
		}
		return res, fmt.Errorf("catch-up: sync since checkpoint: %w", err)
	}
	portals, err := r.Portals(ctx)
	if err != nil {
		return res, fmt.Errorf("catch-up: list portals: %w", err)
	}
	cutoff := start.Add(-cfg.MaxAge).UnixMilli()
	for roomID, room := range resp.Rooms.Join {
		if !portals[roomID] {
			continue
		}
		evts := room.Timeline.Events
		if room.Timeline.Limited {
			// More news than a page: the rest comes from /messages, forward
			// from the checkpoint, so the oldest missed are found first.
			res.Gaps++
			var first id.EventID
			if len(evts) > 0 {
				first = evts[0].ID
			}
			older, complete := r.pageForward(ctx, cli, roomID, cp.Token, first, cutoff-clockSkew.Milliseconds(), cfg.MaxEvents)
			res.Paged += len(older)
			if complete {
				evts = append(older, evts...)
			} else {
				evts, res.More = older, true
			}
		}
		var keep []*event.Event
		for _, evt := range evts {
			if evt == nil || evt.StateKey != nil || !slices.Contains(trackedTypes, evt.Type) || r.Own(evt.Sender) {
				continue
			}
			res.Seen++
			if r.Deliver.Handled(ctx, evt.ID) {
				continue
			}
			res.Missed++
			if evt.Timestamp < cutoff-clockSkew.Milliseconds() {
				res.TooOld++
				continue
			}
			keep = append(keep, evt)
		}
		if len(keep) == 0 {
			continue
		}
		res.Rooms++
		if over := len(keep) - cfg.MaxEvents; over > 0 {
			// The oldest first: the rest follows in the next round (or in
			// the homeserver's own retries), never before them.
			res.OverLimit += over
			keep, res.More = keep[:cfg.MaxEvents], true
		}
		res.Delivered += r.Deliver.DeliverMissed(ctx, roomID, keep)
	}
	if res.More {
		// Keep the checkpoint: the next round reads the same news again and
		// goes on where this one stopped (what it delivered counts as handled).
		return res, nil
	}
	if err := r.saveCheckpoint(ctx, checkpoint{Token: resp.NextBatch, AtMS: start.UnixMilli()}); err != nil {
		return res, err
	}
	// Records of handled events are needed only as far back as a pass looks.
	if _, err := r.Store.ForgetEventsBefore(ctx, start.Add(-cfg.MaxAge-time.Hour)); err != nil {
		r.Log.Warn().Err(err).Msg("Could not forget old handled-event records")
	}
	return res, nil
}

// pageForward fetches a room's events after the checkpoint (from), oldest
// first, up to the first event of the sync's timeline (stop). It ends early
// once it has found more than limit events from cutoffMS on that the bridge
// has not handled, or after maxPages pages; complete says it reached stop
// (or the room's end).
func (r *Runner) pageForward(ctx context.Context, cli *mautrix.Client, room id.RoomID, from string, stop id.EventID, cutoffMS int64, limit int) (out []*event.Event, complete bool) {
	missed := 0
	filter := &mautrix.FilterPart{Types: trackedTypes}
	for page := 0; page < maxPages; page++ {
		msgs, err := cli.Messages(ctx, room, from, "", mautrix.DirectionForward, filter, pageSize)
		if err != nil {
			r.Log.Warn().Err(err).Stringer("room_id", room).Msg("Catch-up could not page through a room; the next round goes on")
			return out, false
		}
		for _, evt := range msgs.Chunk {
			if stop != "" && evt.ID == stop {
				return out, true
			}
			out = append(out, evt)
			if evt.Timestamp >= cutoffMS && !r.Own(evt.Sender) && !r.Deliver.Handled(ctx, evt.ID) {
				if missed++; missed > limit {
					return out, false
				}
			}
		}
		if len(msgs.Chunk) == 0 || msgs.End == "" || msgs.End == from {
			return out, true
		}
		from = msgs.End
	}
	return out, false
}

func (r *Runner) checkpoint(ctx context.Context) (checkpoint, bool, error) {
	var cp checkpoint
	raw, ok, err := r.Store.Value(ctx, checkpointKey)
	if err != nil || !ok {
		return cp, false, err
	}
	if err := json.Unmarshal([]byte(raw), &cp); err != nil || cp.Token == "" {
		r.Log.Warn().Msg("Unreadable catch-up checkpoint; taking a new one")
		return cp, false, nil
	}
	return cp, true, nil
}

func (r *Runner) saveCheckpoint(ctx context.Context, cp checkpoint) error {
	raw, _ := json.Marshal(cp)
	return r.Store.SetValue(ctx, checkpointKey, string(raw))
}

// badToken: the homeserver does not take the since token (4xx other than
// auth and rate limits).
func badToken(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	code := httpErr.Response.StatusCode
	return code >= 400 && code < 500 && code != http.StatusUnauthorized && code != http.StatusForbidden && code != http.StatusTooManyRequests
}

// Filters (inline JSON, which the spec allows for the filter parameter).
var (
	// watchFilter asks for nothing (an event type nobody sends; an empty
	// rooms list would mean every room).
	watchFilter = mustJSON(mautrix.Filter{
		AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Room: &mautrix.RoomFilter{
			Timeline:    &mautrix.FilterPart{Limit: 1, Types: []event.Type{{Type: "net.rcsgate.nothing"}}},
			State:       &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			Ephemeral:   &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		},
	})
	// initFilter only needs a token: one event per room, no state.
	initFilter = mustJSON(mautrix.Filter{
		AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Room: &mautrix.RoomFilter{
			Timeline:    &mautrix.FilterPart{Limit: 1, Types: trackedTypes},
			State:       &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			Ephemeral:   &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		},
	})
	// passFilter: what users send into rooms, a page per room, no state;
	// of the account data only the pass's own mark.
	passFilter = mustJSON(mautrix.Filter{
		AccountData: &mautrix.FilterPart{Types: []event.Type{{Type: passMarkType, Class: event.AccountDataEventType}}},
		Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		Room: &mautrix.RoomFilter{
			Timeline:    &mautrix.FilterPart{Limit: pageSize, Types: trackedTypes},
			State:       &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			Ephemeral:   &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		},
	})
)

// mustJSON encodes a filter literal (plain structs: it cannot fail).
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
