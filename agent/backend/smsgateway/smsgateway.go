// Package smsgateway is a phone backend for the Android app "SMS Gateway
// for Android" (capcom6/android-sms-gateway, Apache-2.0) in its local-server
// mode on the same phone: SMS go out through the app's REST API (basic
// auth), and incoming SMS, MMS notifications and delivery reports come back
// as signed webhooks to a small HTTP server of ours. Messages whose report
// never came are polled, with backoff, for a bounded time.
//
// Written against the app's v1.68.0 source and API description (see
// client.go and webhook.go for the files each fact comes from).
package smsgateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Name is the backend name reported in Hello.
const Name = "smsgateway"

// Polling of messages whose final state never came by webhook.
const (
	maxPollDelay = time.Hour
	maxTrack     = 72 * time.Hour // the app gives up its own webhook retries after ~2 days
	// deliverTimeout bounds a Sink.Deliver made for a webhook: the app
	// waits 30 s for our answer.
	deliverTimeout = 25 * time.Second
)

// Backend is the SMS Gateway backend. Use Open.
type Backend struct {
	log  zerolog.Logger
	set  *settings
	cl   *client
	now  func() time.Time
	wake chan struct{} // capacity 1: a message was posted (poller)

	mu       sync.Mutex
	j        *journal
	sink     backend.Sink
	started  bool
	closed   bool
	ln       net.Listener
	srv      *http.Server
	cancel   context.CancelFunc
	done     chan struct{} // closed when the poller exits
	srvDone  chan struct{}
	sendLock sync.Mutex // one Send at a time: keeps intent/POST/posted ordered per id
}

var _ backend.Backend = (*Backend)(nil)

// Open validates cfg and opens the backend's journal in stateDir.
func Open(log zerolog.Logger, stateDir string, cfg Config) (*Backend, error) {
	set, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	log = log.With().Str("backend", Name).Logger()
	for _, w := range set.warnings {
		log.Warn().Msg(w)
	}
	j, err := openJournal(stateDir, time.Now())
	if err != nil {
		return nil, err
	}
	b := &Backend{
		log:  log,
		set:  set,
		cl:   &client{base: set.base, user: set.username, pass: set.password, hc: &http.Client{Timeout: requestTimeout}},
		now:  time.Now,
		wake: make(chan struct{}, 1),
		j:    j,
	}
	return b, nil
}

func (b *Backend) Name() string { return Name }

// Caps: plain SMS with delivery reports, on the configured SIM slots.
func (b *Backend) Caps() (map[string]wire.Caps, []int) {
	return map[string]wire.Caps{wire.TransportSMS: {DeliveryReports: true}}, append([]int(nil), b.set.sims...)
}

// Start listens for webhooks, registers them with the app when configured
// to, and starts the poller.
func (b *Backend) Start(ctx context.Context, sink backend.Sink) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("smsgateway: already started or closed")
	}
	ln, err := net.Listen("tcp", b.set.listen)
	if err != nil {
		return fmt.Errorf("smsgateway: webhook receiver: %w", err)
	}
	if b.set.register {
		rctx, cancel := context.WithTimeout(ctx, 2*requestTimeout)
		err := b.registerHooks(rctx)
		cancel()
		if err != nil {
			ln.Close()
			return err
		}
	}
	pctx, cancel := context.WithCancel(context.Background())
	b.sink, b.started, b.ln, b.cancel = sink, true, ln, cancel
	mux := http.NewServeMux()
	mux.HandleFunc(b.set.webhookPath, b.serveHook)
	b.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      deliverTimeout + 10*time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return pctx },
	}
	b.srvDone = make(chan struct{})
	go func() {
		defer close(b.srvDone)
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error().Err(err).Msg("webhook receiver stopped")
		}
	}()
	b.done = make(chan struct{})
	go b.pollLoop(pctx)
	b.log.Info().Str("listen", ln.Addr().String()).Bool("poll", b.set.pollInterval > 0).Msg("started")
	return nil
}

// WebhookAddr is the address the webhook receiver listens on (after Start).
func (b *Backend) WebhookAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return ""
	}
	return b.ln.Addr().String()
}

// registerHooks makes sure the app calls webhook_url for every event we
// need: existing registrations are kept, missing ones are added with a
// fixed id so a repeated registration replaces rather than duplicates.
func (b *Backend) registerHooks(ctx context.Context) error {
	have, err := b.cl.listHooks(ctx)
	if err != nil {
		return fmt.Errorf("smsgateway: registering webhooks: %w", err)
	}
	for _, ev := range hookEvents {
		found := false
		for _, h := range have {
			if h.Event == ev && h.URL == b.set.webhookURL {
				found = true
				break
			}
		}
		if found {
			continue
		}
		id := "rcsgate-" + map[string]string{
			evSmsReceived: "sms-received", evSmsDelivered: "sms-delivered",
			evSmsFailed: "sms-failed", evMmsReceived: "mms-received",
		}[ev]
		if err := b.cl.addHook(ctx, webhookReg{ID: id, URL: b.set.webhookURL, Event: ev}); err != nil {
			return fmt.Errorf("smsgateway: registering webhook %s: %w", ev, err)
		}
		b.log.Info().Str("event", ev).Msg("webhook registered")
	}
	return nil
}

// Close stops the webhook receiver and the poller and closes the journal.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if started {
		b.cancel()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = b.srv.Shutdown(sctx)
		cancel()
		<-b.srvDone
		<-b.done
	}
	b.sendLock.Lock()
	defer b.sendLock.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.j.close()
}

// Typing: SMS has no typing indicator.
func (b *Backend) Typing(context.Context, string, bool) error { return nil }

// appID is the app's message id for an event: derived from the event's
// id, so every attempt to send one event carries the same id and the app
// refuses a second copy.
func appID(evID string) string {
	sum := sha256.Sum256([]byte("rcsgate-smsgateway\x00" + evID))
	return "rg" + hex.EncodeToString(sum[:16])
}

// Send hands a text message to the app.
func (b *Backend) Send(ctx context.Context, ev backend.Event) error {
	switch ev.Kind {
	case "", wire.KindText:
	default:
		return backend.Unsupported(ev.Kind, wire.TransportSMS)
	}
	if wire.IsGroupChat(ev.Chat) {
		return backend.Permanent("group chats are not supported over sms")
	}
	if !isE164(ev.Chat) {
		return backend.Permanent("not an international phone number")
	}
	if ev.Text == "" {
		return backend.Permanent("empty message")
	}
	if ev.Media != nil || ev.File != "" {
		return backend.Unsupported(wire.KindMedia, wire.TransportSMS)
	}
	if ev.SIM < 0 || (ev.SIM > 0 && len(b.set.sims) > 0 && !containsInt(b.set.sims, ev.SIM)) {
		return backend.Permanent(fmt.Sprintf("SIM slot %d does not exist on this phone", ev.SIM))
	}
	if ev.ID == "" {
		return backend.Permanent("message without id")
	}
	b.sendLock.Lock()
	defer b.sendLock.Unlock()
	id := appID(ev.ID)
	log := b.log.With().Str("id", ev.ID).Str("app_id", id).Str("chat", redact.Number(ev.Chat)).Logger()

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("smsgateway: closed")
	}
	e := b.j.entries[id]
	if e != nil && e.posted {
		b.mu.Unlock()
		log.Debug().Msg("already with the app")
		return nil
	}
	retry := e != nil
	if !retry {
		// Record the mapping before the app can report on the message.
		if _, err := b.j.append(record{Op: opIntent, App: id, Ev: ev.ID, Chat: ev.Chat, T: b.now().UnixMilli()}); err != nil {
			b.mu.Unlock()
			return err
		}
	}
	b.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if retry {
		// An earlier attempt may have reached the app (crash, timeout):
		// ask before posting. (Posting again would be safe too: since
		// v1.58.0 the app answers a duplicate id with 409, before that
		// it kept the first message and answered 202; asking first does
		// not depend on either.)
		_, err := b.cl.get(cctx, id)
		switch {
		case err == nil:
			log.Info().Msg("earlier attempt reached the app; not sending again")
			return b.markPosted(id)
		case !errors.Is(err, errNotFound):
			return err
		}
	}
	req := sendRequest{
		ID:                 id,
		TextMessage:        &textMessage{Text: ev.Text},
		PhoneNumbers:       []string{ev.Chat},
		SimNumber:          ev.SIM,
		WithDeliveryReport: true,
	}
	if err := b.cl.send(cctx, req); err != nil {
		if pe, ok := backend.IsPermanent(err); ok {
			log.Warn().Str("reason", pe.Reason).Msg("app refused message")
			b.finish(id, wire.StateFailed)
		} else {
			log.Warn().Err(err).Msg("send failed; will be retried")
		}
		return err
	}
	log.Debug().Int("len", redact.Text(ev.Text)).Int("sim", ev.SIM).Msg("handed to the app")
	return b.markPosted(id)
}

func containsInt(l []int, v int) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

func (b *Backend) markPosted(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, err := b.j.append(record{Op: opPosted, App: id})
	if err != nil {
		return err
	}
	if e != nil {
		e.pollDelay = b.set.pollInterval
		e.nextPoll = b.now().Add(e.pollDelay)
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// finish records a final state (best effort: a lost record only means a
// duplicate, idempotent receipt later).
func (b *Backend) finish(id, state string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.j.f == nil {
		return
	}
	if _, err := b.j.append(record{Op: opFinal, App: id, State: state}); err != nil {
		b.log.Warn().Err(err).Msg("journal write failed")
	}
}

// receipt hands a delivery report for the app's message id to the sink.
// It returns nil for a message that is not ours or already final.
func (b *Backend) receipt(ctx context.Context, id, state, reason string) error {
	b.mu.Lock()
	e := b.j.entries[id]
	sink := b.sink
	var ev, chat string
	if e != nil {
		ev, chat = e.ev, e.chat
	}
	b.mu.Unlock()
	if e == nil {
		b.log.Debug().Str("app_id", id).Msg("report for a message not sent by this agent; ignored")
		return nil
	}
	if state == wire.StateFailed && reason == "" {
		reason = "not sent"
	}
	err := sink.Deliver(ctx, backend.Event{
		ID:        id + ":" + state,
		Kind:      wire.KindReceipt,
		Chat:      chat,
		Target:    ev,
		State:     state,
		Reason:    reason,
		Transport: wire.TransportSMS,
		TS:        b.now(),
	})
	if err != nil {
		return err
	}
	b.log.Debug().Str("id", ev).Str("state", state).Msg("delivery report passed on")
	b.finish(id, state)
	return nil
}

// serveHook is the webhook endpoint.
func (b *Backend) serveHook(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBody))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := verify(b.set.signingKey, body, r.Header.Get(hdrSignature), r.Header.Get(hdrTimestamp), b.now()); err != nil {
		b.log.Warn().Str("remote", r.RemoteAddr).Str("why", err.Error()).Msg("webhook rejected: bad signature or timestamp (is signing_key the app's Settings → Webhooks → Signing Key, and the clock right?)")
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	h, err := decodeHook(body)
	if err != nil {
		// Signed by the app but not something we can use: acknowledge,
		// or the app retries it for two days.
		b.log.Warn().Err(err).Msg("webhook ignored: unusable payload")
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), deliverTimeout)
	defer cancel()
	switch {
	case h.In != nil:
		err = b.sink.Deliver(ctx, *h.In)
		if err == nil {
			b.log.Debug().Str("key", h.In.ID).Str("from", redact.Number(h.In.From)).Str("event", h.Event).Msg("received")
		}
	case h.App != "" && h.State != "":
		err = b.receipt(ctx, h.App, h.State, h.Reason)
	}
	if err != nil {
		// The app retries with backoff: the event is not lost.
		b.log.Warn().Err(err).Str("event", h.Event).Msg("agent did not take webhook event; the app will retry")
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// pollLoop asks the app for the state of messages whose final report has
// not come, with backoff, until maxTrack after sending.
func (b *Backend) pollLoop(ctx context.Context) {
	defer close(b.done)
	if b.set.pollInterval <= 0 {
		<-ctx.Done()
		return
	}
	// Messages from before a restart: first look one interval from now.
	b.mu.Lock()
	now := b.now()
	for _, e := range b.j.entries {
		if e.final == "" {
			e.pollDelay = b.set.pollInterval
			e.nextPoll = now.Add(e.pollDelay)
		}
	}
	b.mu.Unlock()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, next := b.duePolls()
		for _, id := range due {
			if ctx.Err() != nil {
				return
			}
			b.pollOne(ctx, id)
		}
		if len(due) > 0 {
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(b.now()), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
			t.Stop() // Go ≥ 1.23 timers: no stale tick to drain
		case <-t.C:
		}
	}
}

// duePolls lists entries to poll now, and the time of the next one.
func (b *Backend) duePolls() (due []string, next time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for id, e := range b.j.entries {
		if e.final != "" || e.nextPoll.IsZero() {
			continue
		}
		if !e.nextPoll.After(now) {
			due = append(due, id)
		} else if next.IsZero() || e.nextPoll.Before(next) {
			next = e.nextPoll
		}
	}
	return due, next
}

func (b *Backend) pollOne(ctx context.Context, id string) {
	b.mu.Lock()
	e := b.j.entries[id]
	posted, created := e.posted, e.created
	// Back off first, so an error below does not spin.
	e.pollDelay = min(max(e.pollDelay*2, b.set.pollInterval), maxPollDelay)
	e.nextPoll = b.now().Add(e.pollDelay)
	b.mu.Unlock()
	if b.now().Sub(created) > maxTrack {
		b.log.Info().Str("app_id", id).Msg("no final delivery report; no longer waiting for one")
		b.finish(id, "expired")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	m, err := b.cl.get(cctx, id)
	switch {
	case errors.Is(err, errNotFound):
		if posted {
			b.log.Warn().Str("app_id", id).Msg("the app no longer knows the message; no report will come")
			b.finish(id, "lost")
		}
		return
	case err != nil:
		b.log.Debug().Err(err).Str("app_id", id).Msg("poll failed")
		return
	}
	if !posted {
		_ = b.markPosted(id)
	}
	state, reason := "", ""
	switch m.State {
	case stateDelivered:
		state = wire.StateDelivered
	case stateFailed:
		state = wire.StateFailed
		for _, r := range m.Recipients {
			if r.Error != "" {
				reason = cleanReason(r.Error)
				break
			}
		}
	case stateCancelled:
		state, reason = wire.StateFailed, "cancelled on the phone"
	default: // Pending, Processed, Sent, Cancelling: not final yet
		return
	}
	if err := b.receipt(ctx, id, state, reason); err != nil {
		b.log.Debug().Err(err).Str("app_id", id).Msg("agent did not take report; will poll again")
	}
}
