package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Client is a Matrix user for tests and benchmarks: it syncs in the
// background, joins every room it is invited to, and lets callers wait for
// events with a deadline instead of sleeping.
type Client struct {
	*mautrix.Client
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	events []*event.Event
	seen   map[id.EventID]bool // timeline events already in events
	notify chan struct{}       // closed and replaced whenever an event arrives
}

// Login logs in with a password and starts syncing.
func Login(ctx context.Context, hsURL, userID, password string) (*Client, error) {
	cli, err := mautrix.NewClient(hsURL, "", "")
	if err != nil {
		return nil, err
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", userID, err)
	}
	c := &Client{Client: cli, notify: make(chan struct{}), done: make(chan struct{}), seen: map[id.EventID]bool{}}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	// A large timeline limit: a benchmark's burst must not be cut into a
	// "limited" sync that skips events.
	syncer.FilterJSON = &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}}
	syncer.OnSync(c.fillGaps)
	syncer.OnEvent(func(ctx context.Context, evt *event.Event) {
		if evt.Type == event.StateMember && evt.GetStateKey() == string(cli.UserID) &&
			evt.Content.AsMember().Membership == event.MembershipInvite {
			go func() { _, _ = cli.JoinRoomByID(context.WithoutCancel(ctx), evt.RoomID) }()
		}
		c.mu.Lock()
		if evt.ID != "" {
			c.seen[evt.ID] = true
		}
		c.events = append(c.events, evt)
		close(c.notify)
		c.notify = make(chan struct{})
		c.mu.Unlock()
	})
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = cancel
	go func() {
		defer close(c.done)
		for sctx.Err() == nil {
			if err := cli.SyncWithContext(sctx); err != nil && sctx.Err() == nil {
				// Transient (homeserver restart in a crash test): sync again.
				t := time.NewTimer(100 * time.Millisecond)
				select {
				case <-sctx.Done():
				case <-t.C:
				}
			}
		}
	}()
	return c, nil
}

// fillGaps fetches what a "limited" timeline left out, as a real client
// does when it scrolls up: tuwunel, for one, gives a room joined since the
// last sync only the events after that sync, so a message sent into a room
// before we joined it arrives by /messages only. The events found go in
// front of the sync's own, oldest first.
func (c *Client) fillGaps(ctx context.Context, resp *mautrix.RespSync, _ string) bool {
	const pages, perPage = 5, 100
	for roomID, room := range resp.Rooms.Join {
		if !room.Timeline.Limited || room.Timeline.PrevBatch == "" {
			continue
		}
		var missed []*event.Event
		from := room.Timeline.PrevBatch
	pagination:
		for range pages {
			msgs, err := c.Client.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, perPage)
			if err != nil {
				break // the sync's own events still count
			}
			for _, evt := range msgs.Chunk {
				c.mu.Lock()
				known := c.seen[evt.ID]
				c.mu.Unlock()
				if known {
					break pagination
				}
				missed = append(missed, evt)
			}
			if msgs.End == "" || len(msgs.Chunk) == 0 {
				break
			}
			from = msgs.End
		}
		slices.Reverse(missed)
		room.Timeline.Events = append(missed, room.Timeline.Events...)
	}
	return true
}

// Close stops syncing.
func (c *Client) Close() {
	c.stop()
	<-c.done
}

// Events returns a copy of every event seen so far.
func (c *Client) Events() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*event.Event(nil), c.events...)
}

// Cursor is a position in the stream of events this client has seen.
type Cursor int

// Now returns the position after the last event seen so far.
func (c *Client) Now() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Cursor(len(c.events))
}

// WaitEvent returns the first event at or after from that matches, waiting
// until ctx's deadline. The returned cursor is just after the match.
func (c *Client) WaitEvent(ctx context.Context, from Cursor, match func(*event.Event) bool) (*event.Event, Cursor, error) {
	i := int(from)
	for {
		c.mu.Lock()
		for ; i < len(c.events); i++ {
			if match(c.events[i]) {
				evt := c.events[i]
				c.mu.Unlock()
				return evt, Cursor(i + 1), nil
			}
		}
		wait := c.notify
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, Cursor(i), fmt.Errorf("waiting for a Matrix event: %w", context.Cause(ctx))
		case <-wait:
		}
	}
}

// Message matches an m.room.message in room (any room if empty) from sender
// (anyone else if empty) with the given body (any if empty).
func (c *Client) Message(room id.RoomID, sender id.UserID, body string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.EventMessage || (room != "" && e.RoomID != room) {
			return false
		}
		if sender != "" && e.Sender != sender || sender == "" && e.Sender == c.UserID {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		m := e.Content.AsMessage()
		return body == "" || m.Body == body
	}
}

// Joined matches the member event that shows user joined room (any room if empty).
func Joined(room id.RoomID, user id.UserID) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.StateMember || e.GetStateKey() != string(user) || (room != "" && e.RoomID != room) {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsMember().Membership == event.MembershipJoin
	}
}

// OpenDM creates a direct chat with user and waits until they joined.
func (c *Client) OpenDM(ctx context.Context, user id.UserID) (id.RoomID, error) {
	from := c.Now()
	resp, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Invite: []id.UserID{user}, IsDirect: true, Preset: "trusted_private_chat",
	})
	if err != nil {
		return "", fmt.Errorf("create DM with %s: %w", user, err)
	}
	if _, _, err := c.WaitEvent(ctx, from, Joined(resp.RoomID, user)); err != nil {
		return "", fmt.Errorf("%s did not join the DM: %w", user, err)
	}
	return resp.RoomID, nil
}

// StartChat asks the bridge bot (in mgmt room) to open a portal to number
// and returns the portal once this client has joined it.
func (c *Client) StartChat(ctx context.Context, mgmt id.RoomID, number string) (id.RoomID, id.UserID, error) {
	from := c.Now()
	// Rooms joined before: a homeserver may send our join again later
	// (tuwunel repeats it in the state of a room joined since the last sync).
	before := map[id.RoomID]bool{}
	for _, e := range c.Events()[:from] {
		if Joined("", c.UserID)(e) {
			before[e.RoomID] = true
		}
	}
	if _, err := c.SendText(ctx, mgmt, "start-chat "+number); err != nil {
		return "", "", err
	}
	// The portal is the first room new to us that we join (not mgmt, nor
	// the space the bridge makes for its chats, which it may create now).
	evt, _, err := c.WaitEvent(ctx, from, func(e *event.Event) bool {
		return e.RoomID != mgmt && !before[e.RoomID] && Joined("", c.UserID)(e) && !c.isSpace(e.RoomID)
	})
	if err != nil {
		return "", "", fmt.Errorf("no portal after start-chat: %w", err)
	}
	// The ghost may join before or after us.
	room := evt.RoomID
	gj, _, err := c.WaitEvent(ctx, 0, func(e *event.Event) bool {
		if e.Type != event.StateMember || e.RoomID != room {
			return false
		}
		u := id.UserID(e.GetStateKey())
		return u != c.UserID && !isBot(u) && Joined(room, u)(e)
	})
	if err != nil {
		return "", "", fmt.Errorf("no ghost joined the portal: %w", err)
	}
	return room, id.UserID(gj.GetStateKey()), nil
}

func isBot(u id.UserID) bool { return u.Localpart() == "rcsbot" }

// isSpace reports whether the room's create event, as seen so far, makes
// it a space. Called from a WaitEvent match (c.mu held).
func (c *Client) isSpace(room id.RoomID) bool {
	for _, e := range c.events {
		if e.RoomID == room && e.Type == event.StateCreate {
			_ = e.Content.ParseRaw(e.Type)
			if cr := e.Content.AsCreate(); cr != nil && cr.Type == event.RoomTypeSpace {
				return true
			}
		}
	}
	return false
}

// SendTextOnce sends a text and makes sure it is stored exactly once, as a
// careful client does across a homeserver crash: each attempt has its own
// deadline; after a failed one (no answer, a cut connection, a 5xx) it waits
// until the homeserver answers, looks for the message among this user's
// latest in the room (a homeserver that restarted may have stored it and
// forgotten the transaction id — Dendrite keeps them in memory) and sends it
// again with the same transaction id only if it is not there. It returns
// the event id and how many attempts failed.
func (c *Client) SendTextOnce(ctx context.Context, room id.RoomID, body string) (id.EventID, int, error) {
	const attemptTimeout = 30 * time.Second
	txn := c.TxnID()
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
	failed := 0
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		resp, err := c.SendMessageEvent(actx, room, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: txn})
		cancel()
		if err == nil {
			return resp.EventID, failed, nil
		}
		if ctx.Err() != nil {
			return "", failed, fmt.Errorf("send %q: %w (last attempt: %v)", body, ctx.Err(), err)
		}
		var httpErr mautrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode < 500 && httpErr.Response.StatusCode != http.StatusTooManyRequests {
			return "", failed, fmt.Errorf("send %q: %w", body, err) // refused: retrying cannot help
		}
		failed++
		evtID, err := c.findOwnText(ctx, room, body)
		if err != nil {
			return "", failed, err
		}
		if evtID != "" {
			return evtID, failed, nil
		}
	}
}

// findOwnText waits until the homeserver answers and returns the event id
// of this user's message with body among the room's latest, or "".
func (c *Client) findOwnText(ctx context.Context, room id.RoomID, body string) (id.EventID, error) {
	filter := &mautrix.FilterPart{Senders: []id.UserID{c.UserID}, Types: []event.Type{event.EventMessage}}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	// A sync token to page back from: Dendrite (spec v1.2) wants one.
	tokenFilter := fmt.Sprintf(`{"room":{"rooms":[%q],"timeline":{"limit":1},"state":{"types":[]},"ephemeral":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}`, room)
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var msgs *mautrix.RespMessages
		snap, err := c.FullSyncRequest(actx, mautrix.ReqSync{FilterID: tokenFilter})
		if err == nil {
			msgs, err = c.Client.Messages(actx, room, snap.NextBatch, "", mautrix.DirectionBackward, filter, 200)
		}
		cancel()
		if err == nil {
			for _, e := range msgs.Chunk {
				if e.Sender != c.UserID {
					continue
				}
				_ = e.Content.ParseRaw(e.Type)
				if m := e.Content.AsMessage(); m != nil && m.Body == body {
					return e.ID, nil
				}
			}
			return "", nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("homeserver not back to look for %q: %w", body, ctx.Err())
		case <-tick.C:
		}
	}
}
