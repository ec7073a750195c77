package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// maxInjectBody bounds a control request: the text limit plus JSON overhead.
const maxInjectBody = 128 << 10

// InjectRequest is the body of POST /v1/inject.
type InjectRequest struct {
	From string `json:"from"`
	Text string `json:"text"`
	// ID, if set, is the phone's own id for the message: the agent queues
	// a message with the same id once, so a client may retry an injection
	// whose answer it lost without doubling it.
	ID string `json:"id,omitempty"`
}

// Health is the body of GET /v1/healthz.
type Health struct {
	Connected bool `json:"connected"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Handler serves the control API:
//
//	POST /v1/inject {"from": "+1...", "text": "..."} → 202 {"queued": true}
//	  (answered only once the agent has stored the message durably)
//	GET  /v1/sent                                   → 200 [{"id","chat","text","ts"}, ...]
//	GET  /v1/healthz                                → 200 {"connected": bool}
//
// Errors are JSON {"error": "..."}. connected reports whether the agent's
// channel to the server is up; nil means never.
func (s *Sim) Handler(connected func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/inject", func(w http.ResponseWriter, r *http.Request) {
		var req InjectRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInjectBody))
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"body must be JSON {\"from\": \"+...\", \"text\": \"...\"}"})
			return
		}
		if err := s.injectID(r.Context(), req.ID, req.From, req.Text); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrNotStarted) || errors.Is(err, ErrClosed) || r.Context().Err() != nil {
				code = http.StatusServiceUnavailable
			}
			writeJSON(w, code, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]bool{"queued": true})
	})
	mux.HandleFunc("GET /v1/sent", func(w http.ResponseWriter, r *http.Request) {
		sent := s.SentMessages()
		if sent == nil {
			sent = []Sent{}
		}
		writeJSON(w, http.StatusOK, sent)
	})
	mux.HandleFunc("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Health{Connected: connected != nil && connected()})
	})
	return mux
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
