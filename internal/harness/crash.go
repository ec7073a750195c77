package harness

import (
	"context"
	"net/http"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
)

// InjectAt is Inject against an explicit control URL with the phone's own
// message id, so a crash test can retry an injection whose answer was lost
// (the agent queues an id once) without racing StartAgent's ControlURL.
func (st *Stack) InjectAt(ctx context.Context, controlURL, msgID, from, text string) error {
	return st.controlAt(ctx, controlURL, http.MethodPost, "/v1/inject", sim.InjectRequest{ID: msgID, From: from, Text: text}, nil)
}

// SentAt is Sent against an explicit control URL.
func (st *Stack) SentAt(ctx context.Context, controlURL string) ([]SentMsg, error) {
	var out []SentMsg
	err := st.controlAt(ctx, controlURL, http.MethodGet, "/v1/sent", nil, &out)
	return out, err
}

// TimelineMessage is one m.room.message as the client's sync saw it.
type TimelineMessage struct {
	EventID id.EventID
	Body    string
}

// Messages returns the m.room.message events in room from sender, in the
// order sync delivered them (the room's timeline order), each event once.
func (c *Client) Messages(room id.RoomID, sender id.UserID) []TimelineMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[id.EventID]bool{}
	var out []TimelineMessage
	for _, e := range c.events {
		if e.Type != event.EventMessage || e.RoomID != room || e.Sender != sender || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		_ = e.Content.ParseRaw(e.Type)
		body := ""
		if m := e.Content.AsMessage(); m != nil {
			body = m.Body
		}
		out = append(out, TimelineMessage{EventID: e.ID, Body: body})
	}
	return out
}
