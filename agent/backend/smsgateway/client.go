package smsgateway

// A thin client for the app's local-server REST API, written from the
// app's own source and API description: capcom6/android-sms-gateway
// v1.68.0 (commit 0cdc5d8), app/src/main/assets/api/swagger.json,
// modules/localserver/WebService.kt (basic auth, routes /messages and
// /webhooks, errors as {"message": "..."}),
// modules/localserver/routes/MessagesRoutes.kt (POST answers 202 with the
// message; a duplicate id answers 409 since v1.58.0 (MessagesService.kt,
// ConflictException), while older versions kept the first message and
// answered 202 again; GET /messages/{id}
// answers 404 for an unknown id) and
// modules/localserver/domain/messages/PostMessageRequest.kt (the fields).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend"
)

// textMessage is PostMessageRequest.textMessage.
type textMessage struct {
	Text string `json:"text"`
}

// sendRequest is the body of POST /messages (PostMessageRequest).
type sendRequest struct {
	ID                 string       `json:"id"`
	TextMessage        *textMessage `json:"textMessage"`
	PhoneNumbers       []string     `json:"phoneNumbers"`
	SimNumber          int          `json:"simNumber,omitempty"`
	WithDeliveryReport bool         `json:"withDeliveryReport"`
}

// Processing states of a message (domain/ProcessingState.kt).
const (
	statePending    = "Pending"
	stateProcessed  = "Processed"
	stateSent       = "Sent"
	stateDelivered  = "Delivered"
	stateFailed     = "Failed"
	stateCancelling = "Cancelling"
	stateCancelled  = "Cancelled"
)

// messageState is the answer of POST /messages and GET /messages/{id}
// (localserver/domain/messages/Message.kt).
type messageState struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Recipients []struct {
		PhoneNumber string `json:"phoneNumber"`
		State       string `json:"state"`
		Error       string `json:"error"`
	} `json:"recipients"`
}

// webhookReg is one registration (webhooks/domain/WebHookDTO.kt).
type webhookReg struct {
	ID    string `json:"id,omitempty"`
	URL   string `json:"url"`
	Event string `json:"event"`
}

// Operations, for statusError and error messages.
const (
	opSend      = "send message"
	opGet       = "get message state"
	opListHooks = "list webhooks"
	opAddHook   = "register webhook"
)

// errNotFound: GET /messages/{id} for an id the app does not have.
var errNotFound = errors.New("smsgateway: no such message")

type client struct {
	base       *url.URL
	user, pass string
	hc         *http.Client
}

// maxAnswer bounds what we read of an answer.
const maxAnswer = 1 << 20

// do sends one request and decodes a 2xx answer into out (when not nil).
// The error is statusError's verdict, or a transient network error.
func (c *client) do(ctx context.Context, op, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path = c.base.Path + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// Never include the URL's query or the body; the error from
		// net/http names method and URL only (no credentials: they are
		// in a header).
		return fmt.Errorf("smsgateway: %s: %w", op, err)
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("smsgateway: %s: reading answer: %w", op, err)
	}
	if err := statusError(op, resp.StatusCode, ans); err != nil {
		return err
	}
	if out != nil && resp.StatusCode/100 == 2 && len(bytes.TrimSpace(ans)) > 0 {
		if err := json.Unmarshal(ans, out); err != nil {
			return fmt.Errorf("smsgateway: %s: bad answer: %w", op, err)
		}
	}
	return nil
}

// statusError turns the app's HTTP status into the backend's error
// classes, for every call: nil for success, errNotFound, a
// *backend.PermanentError for a request the app refuses on its merits
// (retrying the same event cannot help), or a plain (transient) error.
func statusError(op string, code int, body []byte) error {
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusConflict && op == opSend:
		// "Message with the same ID already exists": ids are derived
		// from the event's id, so it is this event's earlier attempt.
		return nil
	case code == http.StatusNotFound && op == opGet:
		return errNotFound
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("smsgateway: %s: HTTP %d: the app refused the credentials (check username and password)", op, code)
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		return fmt.Errorf("smsgateway: %s: HTTP %d: is url the app's local server?", op, code)
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code == http.StatusTooManyRequests:
		return fmt.Errorf("smsgateway: %s: HTTP %d", op, code)
	case code >= 400 && code < 500:
		return &backend.PermanentError{Reason: "SMS Gateway refused it: " + answerReason(code, body)}
	default:
		return fmt.Errorf("smsgateway: %s: HTTP %d: %s", op, code, answerReason(code, body))
	}
}

var digitRun = regexp.MustCompile(`\+?[0-9][0-9 ()-]{4,}[0-9]`)

// answerReason is the app's {"message": ...} made short and free of phone
// numbers (the app may quote the number it refused), or the status text.
func answerReason(code int, body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Message
	}
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(msg, ""))
	msg = strings.TrimSpace(digitRun.ReplaceAllString(msg, "…"))
	if msg == "" {
		return http.StatusText(code)
	}
	return truncate(msg, 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func (c *client) send(ctx context.Context, r sendRequest) error {
	return c.do(ctx, opSend, http.MethodPost, "/messages", r, nil)
}

func (c *client) get(ctx context.Context, id string) (*messageState, error) {
	var m messageState
	if err := c.do(ctx, opGet, http.MethodGet, "/messages/"+url.PathEscape(id), nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (c *client) listHooks(ctx context.Context) ([]webhookReg, error) {
	var l []webhookReg
	err := c.do(ctx, opListHooks, http.MethodGet, "/webhooks", nil, &l)
	return l, err
}

func (c *client) addHook(ctx context.Context, w webhookReg) error {
	return c.do(ctx, opAddHook, http.MethodPost, "/webhooks", w, nil)
}

// requestTimeout bounds one call to the app (it answers from the phone).
const requestTimeout = 30 * time.Second
