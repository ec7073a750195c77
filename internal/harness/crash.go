package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// InjectAt is Inject against an explicit control URL with the phone's own
// message id, so a crash test can retry an injection whose answer was lost
// (the agent queues an id once) without racing StartAgent's ControlURL.
func (st *Stack) InjectAt(ctx context.Context, controlURL, msgID, from, text string) error {
	req := map[string]string{"from": from, "text": text}
	if msgID != "" {
		req["id"] = msgID
	}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, controlURL+"/v1/inject", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("inject: HTTP %d: %s", resp.StatusCode, b.String())
	}
	return nil
}

// SentAt is Sent against an explicit control URL.
func (st *Stack) SentAt(ctx context.Context, controlURL string) ([]SentMsg, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, controlURL+"/v1/sent", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sent: HTTP %d", resp.StatusCode)
	}
	var out []SentMsg
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("sent: %w", err)
	}
	return out, nil
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
