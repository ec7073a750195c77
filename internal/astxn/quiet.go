package astxn

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// Quiet turns push notifications off for the bridge's own users: the bot
// and every ghost. Nobody reads them, but a homeserver may still do the
// work for each message: Dendrite evaluates the push rules of every local
// member of a room for every event (Synapse skips appservice users) and, for
// each member they say to notify, writes a notification row and passes its
// counts to the sync stream, which wakes that member's /sync. In a portal
// that is the bot and the ghost for each message a person sends, and the
// bot again for each answer: writes that queue with the message's own on
// the homeserver's databases. With the master rule (.m.rule.master: "never
// notify") enabled, evaluation stops at the first rule and nothing is
// written. Real users' rules are never touched: Ours must only accept the
// appservice's own namespace.
type Quiet struct {
	AS   *appservice.AppService
	Ours func(id.UserID) bool
	Log  zerolog.Logger

	once  sync.Once
	queue chan id.UserID
	mu    sync.Mutex
	done  map[id.UserID]bool // asked for (or already quiet) in this process
}

const (
	// quietQueue bounds the users waiting for their rule; past it a user is
	// left as is until the next time it comes by.
	quietQueue = 1024
	// quietRemember bounds the users remembered; past it the memory is
	// cleared (setting the rule again is harmless).
	quietRemember = 100_000
	// quietTimeout bounds one request.
	quietTimeout = 30 * time.Second
	// masterRule is the spec's "never notify" override rule.
	masterRule = ".m.rule.master"
)

// Start runs the worker that sets the rules, one request at a time, until
// ctx ends.
func (q *Quiet) Start(ctx context.Context) {
	q.init()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case u := <-q.queue:
				q.set(ctx, u)
			}
		}
	}()
}

func (q *Quiet) init() {
	q.once.Do(func() {
		q.queue = make(chan id.UserID, quietQueue)
		q.done = map[id.UserID]bool{}
	})
}

// Ensure makes user quiet if it is one of ours, once per process; it does
// not wait for the homeserver.
func (q *Quiet) Ensure(user id.UserID) {
	if q == nil || user == "" || q.Ours == nil || !q.Ours(user) {
		return
	}
	q.init()
	q.mu.Lock()
	if q.done[user] {
		q.mu.Unlock()
		return
	}
	if len(q.done) >= quietRemember {
		clear(q.done)
	}
	q.done[user] = true
	q.mu.Unlock()
	select {
	case q.queue <- user:
	default:
		q.mu.Lock()
		delete(q.done, user) // try again when it next comes by
		q.mu.Unlock()
	}
}

// Member makes the user a membership event says joined quiet (see Ensure).
func (q *Quiet) Member(evt *event.Event) {
	if q == nil || evt == nil || evt.Type != event.StateMember || evt.StateKey == nil {
		return
	}
	if m, ok := evt.Content.Parsed.(*event.MemberEventContent); ok && m.Membership == event.MembershipJoin {
		q.Ensure(id.UserID(*evt.StateKey))
	}
}

func (q *Quiet) set(ctx context.Context, user id.UserID) {
	ctx, cancel := context.WithTimeout(ctx, quietTimeout)
	defer cancel()
	intent := q.AS.Intent(user)
	if err := intent.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, masterRule, true); err != nil {
		q.Log.Debug().Err(err).Stringer("user_id", user).Msg("Could not turn notifications off for a bridge user")
		q.mu.Lock()
		delete(q.done, user) // try again when it next comes by
		q.mu.Unlock()
	}
}
