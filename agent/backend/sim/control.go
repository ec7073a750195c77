package sim

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/atomicfile"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// maxInjectBody bounds a control request: small files inline (base64), the
// text limit and JSON overhead. Larger files are generated (Generate).
const maxInjectBody = 12 << 20

// InjectRequest is the body of POST /v1/inject: any event a phone can
// receive (see backend.Event for the fields).
type InjectRequest struct {
	From string `json:"from"`
	Text string `json:"text"`
	// ID, if set, is the phone's own id for the message: the agent queues
	// a message with the same id once, so a client may retry an injection
	// whose answer it lost without doubling it. Reactions, replies and edits
	// name their target by this id.
	ID        string        `json:"id,omitempty"`
	Chat      string        `json:"chat,omitempty"` // default From; "g:<id>" for a group
	Kind      string        `json:"kind,omitempty"`
	FromMe    bool          `json:"from_me,omitempty"`
	Transport string        `json:"transport,omitempty"`
	SIM       int           `json:"sim,omitempty"`
	ReplyTo   string        `json:"reply_to,omitempty"`
	Target    string        `json:"target,omitempty"`
	Emoji     string        `json:"emoji,omitempty"`
	State     string        `json:"state,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	Media     *wire.Media   `json:"media,omitempty"`
	Data      []byte        `json:"data,omitempty"`     // the file's bytes (base64 in JSON)
	Generate  int64         `json:"generate,omitempty"` // or: this many deterministic bytes, written to disk in chunks
	File      string        `json:"file,omitempty"`     // or: a file made by POST /v1/files (taken by this event)
	Group     *wire.Group   `json:"group,omitempty"`
	Contact   *wire.Contact `json:"contact,omitempty"`
	Backfill  bool          `json:"backfill,omitempty"`
	TSMS      int64         `json:"ts,omitempty"`
}

// TypingRequest is the body of POST /v1/typing.
type TypingRequest struct {
	Chat   string `json:"chat"`
	Active bool   `json:"active"`
}

// event turns the request into an event, writing its file bytes under dir.
func (req InjectRequest) event(dir string) (backend.Inbound, func(), error) {
	in := backend.Inbound{ID: req.ID, Kind: req.Kind, Chat: req.Chat, From: req.From, FromMe: req.FromMe, Text: req.Text,
		Transport: req.Transport, SIM: req.SIM, ReplyTo: req.ReplyTo, Target: req.Target, Emoji: req.Emoji,
		State: req.State, Reason: req.Reason, Media: req.Media, Group: req.Group, Contact: req.Contact, Backfill: req.Backfill}
	if req.TSMS != 0 {
		in.TS = time.UnixMilli(req.TSMS)
	}
	cleanup := func() {}
	sources := 0
	for _, set := range []bool{req.Data != nil, req.Generate != 0, req.File != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return in, cleanup, nil
	case sources > 1:
		return in, cleanup, errors.New("give the file's bytes one way: data, generate or file")
	case req.File != "":
		path, err := readyPath(dir, req.File)
		if err != nil {
			return in, cleanup, err
		}
		in.File, in.FileGiven = path, true
		return in, func() { _ = os.Remove(path) }, nil
	}
	if req.Generate < 0 || req.Generate > wire.MaxMediaSize+1<<20 {
		return in, cleanup, errors.New("generate must be between 0 and 101 MiB")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return in, cleanup, err
	}
	f, err := os.CreateTemp(dir, "inject-*")
	if err != nil {
		return in, cleanup, err
	}
	cleanup = func() { _ = os.Remove(f.Name()) }
	if req.Data != nil {
		_, err = f.Write(req.Data)
	} else {
		_, err = io.CopyBuffer(f, io.LimitReader(Pattern(), req.Generate), make([]byte, 256<<10))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return in, func() {}, err
	}
	in.File, in.FileGiven = f.Name(), true // made for this event: the agent's to take
	return in, cleanup, nil
}

// FilesRequest is the body of POST /v1/files: a file that appears on the
// phone (as a photo lands in its gallery) before any message carries it.
type FilesRequest struct {
	Generate int64 `json:"generate"` // this many sim.Pattern bytes
}

// FilesResponse names the file for InjectRequest.File.
type FilesResponse struct {
	File string `json:"file"`
}

// readyPrefix starts the names of files made by POST /v1/files.
const readyPrefix = "ready-"

// makeReady writes a file of n pattern bytes under dir and returns its name.
func makeReady(dir string, n int64) (string, error) {
	if n < 0 || n > wire.MaxMediaSize+1<<20 {
		return "", errors.New("generate must be between 0 and 101 MiB")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := readyPrefix + hex.EncodeToString(b[:])
	f, err := os.CreateTemp(dir, ".ready-*") // named once whole
	if err != nil {
		return "", err
	}
	_, err = io.CopyBuffer(f, io.LimitReader(Pattern(), n), make([]byte, 256<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return name, nil
}

// readyPath resolves a name from makeReady inside dir (nothing else: the
// name comes from a request).
func readyPath(dir, name string) (string, error) {
	raw, ok := strings.CutPrefix(name, readyPrefix)
	if b, err := hex.DecodeString(raw); !ok || err != nil || len(b) != 12 {
		return "", errors.New("file must name a file made by POST /v1/files")
	}
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err != nil {
		return "", errors.New("no such file on the phone (made by POST /v1/files, and not sent yet?)")
	}
	return path, nil
}

// Pattern is an endless deterministic byte stream for generated files; tests
// compare what arrives against it without holding either in memory.
func Pattern() io.Reader { return &pattern{} }

type pattern struct{ n uint64 }

// patternStep: byte n of the pattern is the top byte of n·patternStep
// (mod 2^64), so each byte's product is the last one's plus patternStep.
const patternStep = 0x9E3779B97F4A7C15

func (p *pattern) Read(b []byte) (int, error) {
	x := p.n * patternStep
	for i := range b {
		b[i] = byte(x >> 56)
		x += patternStep
	}
	p.n += uint64(len(b))
	return len(b), nil
}

// Health is the body of GET /v1/healthz.
type Health struct {
	Connected bool `json:"connected"`
}

type errorBody struct {
	Error string `json:"error"`
}

// ControlTokenFile, in the agent's state directory (mode 0600), holds the
// token every control request must carry ("Authorization: Bearer TOKEN"):
// only someone who can read the state directory can drive the phone.
const ControlTokenFile = "control.token"

// LoadOrCreateControlToken returns the control token of stateDir, making
// one the first time.
func LoadOrCreateControlToken(stateDir string) (string, error) {
	if tok, err := ReadControlToken(stateDir); err == nil {
		return tok, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	if err := atomicfile.Write(filepath.Join(stateDir, ControlTokenFile), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("control token: %w", err)
	}
	return tok, nil
}

// ReadControlToken reads the control token of stateDir.
func ReadControlToken(stateDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, ControlTokenFile))
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", ControlTokenFile)
	}
	return tok, nil
}

// Authorize adds what the control API asks of every request: the token,
// and a JSON content type when there is a body.
func Authorize(req *http.Request, token string) {
	req.Header.Set("Authorization", "Bearer "+token)
	if req.Body != nil && req.Body != http.NoBody {
		req.Header.Set("Content-Type", "application/json")
	}
}

// guard lets through only requests a local program made on purpose, not
// ones a web page in the phone's (or a developer's) browser can forge:
// the Host must name loopback (no DNS rebinding), the token must match
// (a page cannot read the state directory, and a custom header makes the
// browser ask first, which we never answer), and a body must be JSON (no
// form posts).
func guard(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		switch {
		case !isLoopbackHost(strings.Trim(host, "[]")):
			writeJSON(w, http.StatusForbidden, errorBody{"the control API answers only requests to a loopback host"})
		case token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1:
			writeJSON(w, http.StatusUnauthorized, errorBody{"missing or wrong control token (Authorization: Bearer <" + ControlTokenFile + " in the agent's state directory>)"})
		case r.Method == http.MethodPost && !isJSON(r.Header.Get("Content-Type")):
			writeJSON(w, http.StatusUnsupportedMediaType, errorBody{"the body must be sent as Content-Type: application/json"})
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// Handler serves the control API to requests that pass guard (token,
// loopback Host, JSON bodies):
//
//	POST /v1/inject {"from": "+1...", "text": "..."} → 202 {"queued": true}
//	  (answered only once the agent has stored the message durably)
//	POST /v1/files {"generate": N}                  → 201 {"file": "ready-..."}: N pattern
//	  bytes on the phone, for an inject's "file" to send (and take)
//	GET  /v1/sent                                   → 200 [{"id","chat","text","ts"}, ...]
//	POST /v1/typing {"chat": "+1...", "active": true} → 202: the contact types
//	GET  /v1/typing?chat=+1...                      → 200 {"active","known"}: what the phone was told
//	GET  /v1/media/{id}                             → 200 the bytes of a file sent with that id
//	GET  /v1/healthz                                → 200 {"connected": bool}
//
// Errors are JSON {"error": "..."}. connected reports whether the agent's
// channel to the server is up; nil means never.
func (s *Sim) Handler(connected func() bool, token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/inject", func(w http.ResponseWriter, r *http.Request) {
		var req InjectRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInjectBody))
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"body must be JSON {\"from\": \"+...\", \"text\": \"...\"}"})
			return
		}
		in, cleanup, err := req.event(s.mediaDir)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		defer cleanup() // the agent took or copied the file before InjectEvent returned
		if err := s.InjectEvent(r.Context(), in); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrNotStarted) || errors.Is(err, ErrClosed) || r.Context().Err() != nil {
				code = http.StatusServiceUnavailable
			}
			writeJSON(w, code, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]bool{"queued": true})
	})
	mux.HandleFunc("POST /v1/files", func(w http.ResponseWriter, r *http.Request) {
		var req FilesRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"body must be JSON {\"generate\": N}"})
			return
		}
		name, err := makeReady(s.mediaDir, req.Generate)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusCreated, FilesResponse{File: name})
	})
	mux.HandleFunc("GET /v1/sent", func(w http.ResponseWriter, r *http.Request) {
		sent := s.SentMessages()
		if sent == nil {
			sent = []Sent{}
		}
		writeJSON(w, http.StatusOK, sent)
	})
	mux.HandleFunc("POST /v1/typing", func(w http.ResponseWriter, r *http.Request) {
		var req TypingRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Chat == "" {
			writeJSON(w, http.StatusBadRequest, errorBody{"body must be JSON {\"chat\": \"+...\", \"active\": true}"})
			return
		}
		if err := s.InjectTyping(req.Chat, req.Active); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]bool{"queued": true})
	})
	mux.HandleFunc("GET /v1/typing", func(w http.ResponseWriter, r *http.Request) {
		active, known := s.TypingState(r.URL.Query().Get("chat"))
		writeJSON(w, http.StatusOK, map[string]bool{"active": active, "known": known})
	})
	mux.HandleFunc("GET /v1/media/{id}", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(s.MediaPath(r.PathValue("id")))
		if err != nil {
			writeJSON(w, http.StatusNotFound, errorBody{"no file was sent with that id"})
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, f)
	})
	mux.HandleFunc("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Health{Connected: connected != nil && connected()})
	})
	return guard(token, mux)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ListenControl listens on addr for the control API, refusing anything but a
// loopback address: the API injects messages and lists what was sent, so it
// must never be reachable from the network.
func ListenControl(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control address %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return nil, fmt.Errorf("control address %q is not a loopback address; use 127.0.0.1:PORT or [::1]:PORT", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control API: %w", err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("control address %q resolved to non-loopback %s", addr, ln.Addr())
	}
	return ln, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
