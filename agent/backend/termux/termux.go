// Package termux is a phone backend for plain SMS through Termux:API: it
// sends with termux-sms-send and polls the inbox with termux-sms-list. It
// has no delivery reports, no MMS and no RCS (Termux:API offers none). See
// docs/backends/termux.md.
package termux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Name is the backend name reported in Hello.
const Name = "termux"

// IDPrefix starts the Event.ID of every SMS delivered: "termux-" + _id.
const IDPrefix = "termux-"

// Defaults for Config.
const (
	DefaultPollInterval   = 5 * time.Second
	DefaultPageSize       = 50
	DefaultCommandTimeout = 60 * time.Second
	// maxPages bounds one poll's paging back through the inbox.
	maxPages = 20
	// maxPollBackoff caps the pause after failing polls.
	maxPollBackoff = 5 * time.Minute
)

// Duration is the config duration shared by every backend.
type Duration = backend.Duration

// Config is the backend's --backend-config object.
type Config struct {
	// BinDir holds termux-sms-send and termux-sms-list; "" searches PATH
	// (in Termux: /data/data/com.termux/files/usr/bin).
	BinDir string `json:"bin_dir,omitempty"`
	// PollInterval between termux-sms-list calls (default 5s).
	PollInterval Duration `json:"poll_interval,omitempty"`
	// PageSize is termux-sms-list's -l (default 50).
	PageSize int `json:"page_size,omitempty"`
	// CommandTimeout bounds each termux-* command (default 60s): they hang
	// when the Termux:API app is missing or cannot start.
	CommandTimeout Duration `json:"command_timeout,omitempty"`
	// SIMs lists the 1-based SIM slots to announce (nil: one SIM, sent with
	// the phone's default). Event.SIM n is passed as -s n-1.
	SIMs []int `json:"sims,omitempty"`
	// Backfill is how many of the newest inbox SMS to deliver (as history)
	// on the very first start; 0 starts with the next SMS to arrive.
	Backfill int `json:"backfill,omitempty"`
}

func (c *Config) defaults() error {
	if c.PollInterval == 0 {
		c.PollInterval = Duration(DefaultPollInterval)
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = Duration(DefaultCommandTimeout)
	}
	switch {
	case c.PollInterval < Duration(100*time.Millisecond):
		return fmt.Errorf("termux: poll_interval %v is too short", time.Duration(c.PollInterval))
	case c.PageSize < 1 || c.PageSize > 1000:
		return fmt.Errorf("termux: page_size %d out of 1..1000", c.PageSize)
	case c.CommandTimeout < Duration(time.Second):
		return fmt.Errorf("termux: command_timeout %v is too short", time.Duration(c.CommandTimeout))
	case c.Backfill < 0 || c.Backfill > 10000:
		return fmt.Errorf("termux: backfill %d out of 0..10000", c.Backfill)
	}
	for _, s := range c.SIMs {
		if s < 1 || s > 8 {
			return fmt.Errorf("termux: SIM slot %d out of 1..8", s)
		}
	}
	return nil
}

// Termux is the backend. Use Open.
type Termux struct {
	log        zerolog.Logger
	cfg        Config
	cursorPath string
	loc        *time.Location
	now        func() time.Time

	sendMu sync.Mutex // one termux-sms-send at a time; guards sent
	sent   *sentLog

	mu      sync.Mutex
	started bool
	stop    context.CancelFunc
	done    chan struct{}
	polled  chan struct{} // tests: receives after each poll (never blocks)
}

var _ backend.Backend = (*Termux)(nil)

// Open returns the backend; its records live in stateDir.
func Open(log zerolog.Logger, stateDir string, cfg Config) (*Termux, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.BinDir != "" {
		if fi, err := os.Stat(cfg.BinDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("termux: bin_dir %s is not a directory", cfg.BinDir)
		}
	}
	sl, err := openSentLog(filepath.Join(stateDir, SentFile))
	if err != nil {
		return nil, err
	}
	return &Termux{
		log:        log.With().Str("backend", Name).Logger(),
		cfg:        cfg,
		cursorPath: filepath.Join(stateDir, CursorFile),
		loc:        time.Local,
		now:        time.Now,
		sent:       sl,
		done:       make(chan struct{}),
	}, nil
}

func (t *Termux) Name() string { return Name }

// Caps: SMS text only, and no delivery reports (termux-sms-send has no
// sent or delivered callbacks).
func (t *Termux) Caps() (map[string]wire.Caps, []int) {
	return map[string]wire.Caps{wire.TransportSMS: {}}, slices.Clone(t.cfg.SIMs)
}

// Typing is a no-op: SMS has no typing notifications.
func (t *Termux) Typing(ctx context.Context, chat string, active bool) error { return nil }

// Start checks that the cursor is readable and starts polling the inbox.
func (t *Termux) Start(ctx context.Context, sink backend.Sink) error {
	if _, _, err := loadCursor(t.cursorPath); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started {
		return errors.New("termux: already started")
	}
	t.started = true
	pctx, stop := context.WithCancel(ctx)
	t.stop = stop
	go t.pollLoop(pctx, sink)
	return nil
}

// Close stops polling and closes the sent log.
func (t *Termux) Close() error {
	t.mu.Lock()
	started, stop := t.started, t.stop
	t.mu.Unlock()
	if started {
		stop()
		<-t.done
	}
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.sent == nil {
		return nil
	}
	err := t.sent.close()
	t.sent = nil
	return err
}

// validNumber: an optional "+" and 3 to 15 digits (short codes included).
// termux-sms-send splits -n on commas and the shell on spaces, so nothing
// else may reach it.
func validNumber(n string) bool {
	d := strings.TrimPrefix(n, "+")
	if len(d) < 3 || len(d) > 15 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// ErrUnknownOutcome is wrapped by the permanent error of a send whose fate
// is unknown: it was cut off after termux-sms-send started.
var ErrUnknownOutcome = errors.New("termux: send outcome unknown")

// Send sends a text SMS. It is at most once per ev.ID: see the package
// documentation in docs/backends/termux.md ("Sending, exactly how").
func (t *Termux) Send(ctx context.Context, ev backend.Event) error {
	switch ev.Kind {
	case "", wire.KindText:
	default:
		return backend.Unsupported(ev.Kind, wire.TransportSMS)
	}
	switch {
	case ev.ReplyTo != "":
		return backend.Unsupported("reply", wire.TransportSMS)
	case wire.IsGroupChat(ev.Chat):
		return backend.Permanent("group chats are not supported by the termux backend")
	case !validNumber(ev.Chat):
		return backend.Permanent("invalid phone number")
	case strings.TrimSpace(ev.Text) == "":
		// Termux:API trims the text; an empty SMS would not be sent at all.
		return backend.Permanent("empty message")
	}
	args := []string{"-n", ev.Chat}
	if ev.SIM > 0 {
		if len(t.cfg.SIMs) == 0 {
			if ev.SIM != 1 {
				return backend.Permanent("no such SIM slot")
			}
		} else if !slices.Contains(t.cfg.SIMs, ev.SIM) {
			return backend.Permanent("no such SIM slot")
		} else {
			// termux-sms-send -s is Android's 0-based SIM slot index.
			args = append(args, "-s", strconv.Itoa(ev.SIM-1))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.sent == nil {
		return errors.New("termux: closed")
	}
	log := t.log.With().Str("id", ev.ID).Str("chat", redact.Number(ev.Chat)).Logger()
	if ev.ID != "" {
		switch t.sent.get(ev.ID) {
		case stSent:
			log.Info().Msg("send already done; not sending again")
			return nil
		case stAttempt:
			log.Warn().Msg("an earlier send of this id was cut off; not sending again")
			return &backend.PermanentError{Reason: "sent status unknown after restart", Err: ErrUnknownOutcome}
		}
		if err := t.sent.put(ev.ID, stAttempt); err != nil {
			return err // transient: nothing was sent
		}
	}
	// The command runs to its own timeout even if ctx ends: killing it
	// half-way would leave the outcome unknown.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(t.cfg.CommandTimeout))
	defer cancel()
	out, runErr := t.run(rctx, "termux-sms-send", args, ev.Text)
	st, err := t.sendOutcome(rctx, out, runErr)
	if ev.ID != "" && st != stAttempt {
		if rerr := t.sent.put(ev.ID, st); rerr != nil {
			// The attempt record stays: a retry after a restart reports the
			// send as unknown rather than sending twice.
			log.Warn().Err(rerr).Msg("cannot record send outcome")
			if st == stNotSent && err == nil {
				err = rerr
			}
		}
	}
	switch {
	case err == nil:
		log.Debug().Int("len", len(ev.Text)).Int("sim", ev.SIM).Msg("sms handed to termux-sms-send")
	case st == stAttempt:
		log.Warn().Err(err).Msg("sms send outcome unknown")
	default:
		log.Warn().Err(err).Msg("sms not sent")
	}
	return err
}

// sendOutcome maps termux-sms-send's result to a send state and an error.
func (t *Termux) sendOutcome(rctx context.Context, out []byte, runErr error) (string, error) {
	if runErr == nil {
		return stSent, nil
	}
	var ee *exec.ExitError
	switch {
	case rctx.Err() != nil:
		return stAttempt, &backend.PermanentError{Reason: "sent status unknown: termux-sms-send timed out",
			Err: fmt.Errorf("%w: %w", ErrUnknownOutcome, runErr)}
	case errors.As(runErr, &ee) && ee.Exited():
		cause := fmt.Errorf("termux-sms-send exited with status %d: %s", ee.ExitCode(), excerpt(out))
		if permanentOutput(out) {
			return stNotSent, &backend.PermanentError{Reason: "termux-sms-send refused the message", Err: cause}
		}
		return stNotSent, fmt.Errorf("termux: send: %w", cause)
	case errors.As(runErr, &ee):
		// Killed by a signal that was not ours: it may have sent.
		return stAttempt, &backend.PermanentError{Reason: "sent status unknown: termux-sms-send was killed",
			Err: fmt.Errorf("%w: %w", ErrUnknownOutcome, runErr)}
	default:
		// It never started (not installed, not executable): nothing sent.
		return stNotSent, fmt.Errorf("termux: send: %w", runErr)
	}
}

// permanentOutput recognises termux-sms-send's own refusals (usage errors)
// and invalid-number complaints: sending again cannot help.
func permanentOutput(out []byte) bool {
	s := strings.ToLower(string(out))
	for _, p := range []string{"invalid number", "invalid phone", "invalid destination", "illegal option",
		"no recipient", "invalid slot", "unsupported type"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// excerpt is a short, number-masked piece of command output for errors.
func excerpt(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) > 200 {
		out = out[:200]
	}
	var b bytes.Buffer
	_, _ = redact.Writer{W: &b}.Write(out)
	return strings.ToValidUTF8(b.String(), "?")
}

// command returns the path of a termux-* tool.
func (t *Termux) command(name string) string {
	if t.cfg.BinDir != "" {
		return filepath.Join(t.cfg.BinDir, name)
	}
	return name
}

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	b   bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// run runs a termux-* tool with stdin as its input; stdout and stderr are
// returned together (bounded).
func (t *Termux) run(ctx context.Context, name string, args []string, stdin string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, t.command(name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out := &limitedBuffer{max: maxListOutput + 1}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	return out.b.Bytes(), err
}

// list runs termux-sms-list for one page of the inbox: the newest-first
// page at offset, printed oldest first.
func (t *Termux) list(ctx context.Context, limit, offset int) ([]SMS, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(t.cfg.CommandTimeout))
	defer cancel()
	out, err := t.run(ctx, "termux-sms-list", []string{"-t", "inbox", "-l", strconv.Itoa(limit), "-o", strconv.Itoa(offset)}, "")
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("termux: termux-sms-list: %w", ctx.Err())
		}
		return nil, fmt.Errorf("termux: termux-sms-list: %w: %s", err, excerpt(out))
	}
	rows, err := ParseList(out)
	if err != nil {
		return nil, fmt.Errorf("termux: %w", err)
	}
	return rows, nil
}

func (t *Termux) pollLoop(ctx context.Context, sink backend.Sink) {
	defer close(t.done)
	interval := time.Duration(t.cfg.PollInterval)
	bo := &agent.Backoff{Schedule: agent.ExponentialSchedule(interval, max(interval, maxPollBackoff)), Jitter: agent.DefaultJitter}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := t.poll(ctx, sink)
		wait := interval
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = bo.Next()
			t.log.Warn().Err(err).Dur("retry_in", wait).Msg("inbox poll failed")
		} else {
			bo.Reset()
		}
		t.mu.Lock()
		polled := t.polled
		t.mu.Unlock()
		if polled != nil {
			select {
			case polled <- struct{}{}:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// poll delivers every inbox SMS newer than the cursor, oldest _id first,
// advancing the cursor after each one the sink took.
func (t *Termux) poll(ctx context.Context, sink backend.Sink) error {
	cur, ok, err := loadCursor(t.cursorPath)
	if err != nil {
		return err
	}
	if !ok {
		if cur, err = t.firstStart(ctx); err != nil {
			return err
		}
	}
	var fresh []SMS
	seen := map[int64]bool{}
	for page := 0; page < maxPages; page++ {
		rows, err := t.list(ctx, t.cfg.PageSize, page*t.cfg.PageSize)
		if err != nil {
			return err
		}
		old := false
		for _, r := range rows {
			if r.ID <= cur.LastID {
				old = true
			} else if !seen[r.ID] {
				seen[r.ID] = true
				fresh = append(fresh, r)
			}
		}
		if old || len(rows) < t.cfg.PageSize {
			break
		}
	}
	slices.SortFunc(fresh, func(a, b SMS) int { return int(min(max(a.ID-b.ID, -1), 1)) })
	for _, r := range fresh {
		if ev, ok := t.event(r, cur); ok {
			if err := sink.Deliver(ctx, ev); err != nil {
				return fmt.Errorf("termux: agent did not take SMS %d (will offer it again): %w", r.ID, err)
			}
			t.log.Debug().Str("id", ev.ID).Str("from", redact.Number(ev.From)).Int("len", len(ev.Text)).Msg("sms delivered")
		}
		cur.LastID = r.ID
		if err := saveCursor(t.cursorPath, cur); err != nil {
			return err
		}
	}
	return nil
}

// firstStart makes the first cursor: just below the Backfill newest SMS
// (or at the newest with Backfill 0), so old history is not replayed.
func (t *Termux) firstStart(ctx context.Context) (cursor, error) {
	rows, err := t.list(ctx, max(t.cfg.Backfill, 1), 0)
	if err != nil {
		return cursor{}, err
	}
	var c cursor
	ids := make([]int64, 0, len(rows))
	for _, r := range rows {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		c.BackfillUntil = ids[len(ids)-1]
		c.LastID = ids[len(ids)-1]
		if t.cfg.Backfill > 0 {
			c.LastID = ids[0] - 1
		}
	}
	if err := saveCursor(t.cursorPath, c); err != nil {
		return cursor{}, err
	}
	t.log.Info().Int("backfill", t.cfg.Backfill).Msg("first start: inbox cursor set")
	return c, nil
}

// event turns an inbox row into an Event; ok is false for rows that can
// never be delivered (no sender, empty body, invalid fields), which are
// skipped with a log line so they do not block the ones after them.
func (t *Termux) event(r SMS, cur cursor) (backend.Event, bool) {
	from := r.From()
	ev := backend.Event{
		ID: IDPrefix + strconv.FormatInt(r.ID, 10), Chat: from, From: from, Text: r.Body,
		TS: r.Time(t.loc), Transport: wire.TransportSMS, Backfill: r.ID <= cur.BackfillUntil,
	}
	if ev.TS.IsZero() {
		ev.TS = t.now()
	}
	if r.Type != "" && r.Type != "inbox" {
		t.log.Warn().Str("id", ev.ID).Msg("termux-sms-list returned a non-inbox row; skipped")
		return ev, false
	}
	if ev.Text == "" {
		t.log.Info().Str("id", ev.ID).Msg("empty SMS skipped")
		return ev, false
	}
	m := ev.ToWire()
	m.ID = backend.WireID(ev.ID)
	if err := m.Validate(); err != nil {
		t.log.Warn().Str("id", ev.ID).Str("from", redact.Number(from)).Err(err).Msg("SMS cannot be delivered; skipped")
		return ev, false
	}
	return ev, true
}
