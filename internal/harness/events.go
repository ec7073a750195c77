package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
)

// InjectEvent makes the simulated phone receive any event (a file, a
// reaction, a group change...); it returns once the agent stored it.
func (st *Stack) InjectEvent(ctx context.Context, req sim.InjectRequest) error {
	return st.control(ctx, http.MethodPost, "/v1/inject", req, nil)
}

// PhoneFile puts a file of size sim.Pattern bytes on the simulated phone
// and names it for an injected event's File (which takes it).
func (st *Stack) PhoneFile(ctx context.Context, size int64) (string, error) {
	var out sim.FilesResponse
	err := st.control(ctx, http.MethodPost, "/v1/files", sim.FilesRequest{Generate: size}, &out)
	return out.File, err
}

// ContactTyping makes a contact start or stop typing in chat.
func (st *Stack) ContactTyping(ctx context.Context, chat string, active bool) error {
	return st.control(ctx, http.MethodPost, "/v1/typing", sim.TypingRequest{Chat: chat, Active: active}, nil)
}

// PhoneTyping reports the last typing notice the phone got for chat.
func (st *Stack) PhoneTyping(ctx context.Context, chat string) (active, known bool, err error) {
	var out struct{ Active, Known bool }
	err = st.control(ctx, http.MethodGet, "/v1/typing?chat="+url.QueryEscape(chat), nil, &out)
	return out.Active, out.Known, err
}

// SentEvents lists every event the simulated phone sent, in order.
func (st *Stack) SentEvents(ctx context.Context) ([]sim.Sent, error) {
	var out []sim.Sent
	err := st.control(ctx, http.MethodGet, "/v1/sent", nil, &out)
	return out, err
}

// SentFile returns the bytes of a file the phone sent with event id.
func (st *Stack) SentFile(ctx context.Context, id string) ([]byte, error) {
	resp, err := st.OpenSentFile(ctx, id)
	if err != nil {
		return nil, err
	}
	defer resp.Close()
	return io.ReadAll(resp)
}

// OpenSentFile streams the phone's copy of a file it sent with event id.
func (st *Stack) OpenSentFile(ctx context.Context, id string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.ControlURL+"/v1/media/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	sim.Authorize(req, st.ControlToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("sent file: HTTP %d", resp.StatusCode)
	}
	return resp.Body, nil
}

// WaitSent polls the phone's sent list until match finds an event or ctx
// ends; the phone has no push channel for tests, so this is a condition
// wait with a deadline, not a sleep.
func (st *Stack) WaitSent(ctx context.Context, match func(sim.Sent) bool) (sim.Sent, error) {
	return st.WaitSentOn(ctx, Phone{URL: st.ControlURL, Token: st.ControlToken}, match)
}

// WaitSentOn is WaitSent for another phone (see AddUser).
func (st *Stack) WaitSentOn(ctx context.Context, ph Phone, match func(sim.Sent) bool) (sim.Sent, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var sent []sim.Sent
		err := controlPhone(ctx, ph, http.MethodGet, "/v1/sent", nil, &sent)
		if err == nil {
			for _, s := range sent {
				if match(s) {
					return s, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return sim.Sent{}, fmt.Errorf("waiting for the phone to send: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (st *Stack) control(ctx context.Context, method, path string, in, out any) error {
	return st.controlAt(ctx, st.ControlURL, method, path, in, out)
}

// controlAt calls the sim's control API at base; it answers 200, 201 or 202.
func (st *Stack) controlAt(ctx context.Context, base, method, path string, in, out any) error {
	return controlPhone(ctx, Phone{URL: base, Token: st.ControlToken}, method, path, in, out)
}

// InjectOn makes a contact write to another phone (see AddUser).
func (st *Stack) InjectOn(ctx context.Context, ph Phone, from, text string) error {
	return controlPhone(ctx, ph, http.MethodPost, "/v1/inject", sim.InjectRequest{From: from, Text: text}, nil)
}

// controlPhone calls a phone's sim control API; it answers 200, 201 or 202.
func controlPhone(ctx context.Context, ph Phone, method, path string, in, out any) error {
	base := ph.URL
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	sim.Authorize(req, ph.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sim %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("sim %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}
