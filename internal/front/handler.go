package front

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Proxy timeouts. Client /sync and federation requests long-poll, media
// moves large bodies, so there is no overall read or write deadline: only
// the dial, the wait for the homeserver's response headers and idle
// connections are bounded.
const (
	upstreamDialTimeout     = 10 * time.Second
	upstreamResponseTimeout = 5 * time.Minute
	upstreamIdleTimeout     = 90 * time.Second
	readHeaderTimeout       = 20 * time.Second
	httpsIdleTimeout        = 2 * time.Minute
	maxHeaderBytes          = 64 << 10
	hstsValue               = "max-age=31536000"
)

// wellKnown holds the two .well-known/matrix documents.
type wellKnown struct {
	client, server []byte
}

func newWellKnown(cfg *Config) wellKnown {
	client, _ := json.Marshal(map[string]any{"m.homeserver": map[string]string{"base_url": "https://" + cfg.publicHost()}})
	server, _ := json.Marshal(map[string]string{"m.server": hostPort(cfg.Domain, cfg.publicPort())})
	return wellKnown{client: client, server: server}
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// httpsHandler routes the HTTPS side: the Matrix APIs to the homeserver,
// the .well-known documents, 404 for everything else.
type httpsHandler struct {
	proxy http.Handler
	wk    wellKnown
	hsts  bool
}

func (h *httpsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.hsts {
		w.Header().Set("Strict-Transport-Security", hstsValue)
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/_matrix/") || strings.HasPrefix(p, "/_synapse/client/"):
		// No routing through a ServeMux: it would "clean" paths and redirect,
		// and base64 event ids legitimately contain "//" once unescaped. Dot
		// segments are refused so nothing reaches the homeserver outside
		// these prefixes (e.g. /_synapse/admin).
		if hasDotSegment(p) || hasDotSegment(r.URL.EscapedPath()) {
			matrixError(w, http.StatusBadRequest, "M_UNRECOGNIZED", "Bad path")
			return
		}
		h.proxy.ServeHTTP(w, r)
	case p == "/.well-known/matrix/client":
		serveWellKnown(w, r, h.wk.client)
	case p == "/.well-known/matrix/server":
		serveWellKnown(w, r, h.wk.server)
	default:
		matrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
	}
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func serveWellKnown(w http.ResponseWriter, r *http.Request, body []byte) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "public, max-age=3600")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		matrixError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed")
	}
}

func matrixError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]string{"errcode": code, "error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// newProxy is the reverse proxy to the homeserver: bodies stream both ways,
// the client's Host header is kept (as Synapse's docs ask), and the
// X-Forwarded-For/-Host/-Proto headers are set from the connection (any the
// client sent are dropped).
func newProxy(upstream *url.URL, lg zerolog.Logger) *httputil.ReverseProxy {
	transport := &http.Transport{
		Proxy: nil, // never send loopback traffic through $HTTPS_PROXY
		DialContext: (&net.Dialer{
			Timeout:   upstreamDialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       upstreamIdleTimeout,
		TLSHandshakeTimeout:   upstreamDialTimeout,
		ResponseHeaderTimeout: upstreamResponseTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: transport,
		ErrorLog:  log.New(levelWriter{lg, zerolog.DebugLevel}, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
				return // the client went away
			}
			// the path only: the query may carry an access token
			lg.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("homeserver did not answer")
			status := http.StatusBadGateway
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				status = http.StatusGatewayTimeout
			}
			matrixError(w, status, "M_UNKNOWN", "The homeserver is unavailable")
		},
	}
}

// redirectHandler answers plain HTTP: a 308 (method-preserving) to the same
// path and query on https://<Domain>. The configured name is used, never
// the request's Host header.
func redirectHandler(publicHost string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uri := r.URL.RequestURI()
		if !strings.HasPrefix(uri, "/") {
			uri = "/"
		}
		http.Redirect(w, r, "https://"+publicHost+uri, http.StatusPermanentRedirect)
	})
}

// levelWriter turns the standard library's log lines (http.Server and
// ReverseProxy errors, mostly TLS handshake noise) into zerolog events.
type levelWriter struct {
	log   zerolog.Logger
	level zerolog.Level
}

func (w levelWriter) Write(p []byte) (int, error) {
	w.log.WithLevel(w.level).Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
