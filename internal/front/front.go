package front

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// EventKind names a certificate event.
type EventKind string

// Certificate events, as passed to Config.OnEvent.
const (
	EventObtaining EventKind = "obtaining" // an ACME order starts (Renewal says which kind)
	EventObtained  EventKind = "obtained"  // a first certificate was issued
	EventRenewed   EventKind = "renewed"   // a renewal was issued
	EventFailed    EventKind = "failed"    // issuance/renewal failed (retried with backoff) or a provided pair does not load
	EventRevoked   EventKind = "revoked"   // OCSP says revoked; certmagic replaces it
	EventLoaded    EventKind = "loaded"    // a certificate entered service (from storage, after issuance, or generated)
	EventReloaded  EventKind = "reloaded"  // provided files changed and were reloaded
)

// Event is one certificate event.
type Event struct {
	Kind    EventKind
	Domain  string
	Renewal bool
	Issuer  string        // acme: the CA's storage key
	Cert    *CertInfo     // obtained, renewed, loaded, reloaded
	Took    time.Duration // obtained, renewed: since the order started
	Err     error         // failed
}

// shutdownGrace bounds how long Serve waits for requests in flight.
const shutdownGrace = 5 * time.Second

// acmeTLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// Front is the HTTPS front. Create it with New, run it with Serve.
type Front struct {
	cfg   Config
	log   zerolog.Logger
	tls   *tls.Config
	https http.Handler
	http  http.Handler

	acme  *acmeSource
	files *fileSource
	self  *CertInfo // selfsigned

	serving   atomic.Bool
	closeOnce sync.Once
}

// New checks cfg and prepares the certificate source: in acme mode the
// certmagic cache and storage (checked writable), in provided mode the
// first load of the pair, in selfsigned mode the generated (or reused)
// certificate, whose SHA-256 fingerprint it logs. Nothing is bound and no
// ACME request is made before Serve. Call Close if Serve is never called.
func New(ctx context.Context, cfg Config) (*Front, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StorageDir != "" {
		abs, err := filepath.Abs(cfg.StorageDir)
		if err != nil {
			return nil, fmt.Errorf("front: storage dir: %w", err)
		}
		cfg.StorageDir = abs
	}
	upstream, _ := url.Parse(cfg.Homeserver) // checked by Validate
	f := &Front{cfg: cfg, log: cfg.Log.With().Str("component", "front").Logger()}

	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
	}
	var httpHandler http.Handler = redirectHandler(cfg.publicHost())
	switch cfg.Mode {
	case ModeACME:
		src, err := newACMESource(ctx, &f.cfg, f.log, f.notify)
		if err != nil {
			return nil, err
		}
		f.acme = src
		tc.GetCertificate = src.magic.GetCertificate // also answers acme-tls/1 handshakes
		if !cfg.DisableTLSALPNChallenge {
			tc.NextProtos = append(tc.NextProtos, acmeTLS1)
		}
		httpHandler = src.issuer.HTTPChallengeHandler(httpHandler)
	case ModeProvided:
		src, err := newFileSource(&f.cfg, f.log, f.notify)
		if err != nil {
			return nil, err
		}
		f.files = src
		tc.GetCertificate = src.getCertificate
	case ModeSelfSigned:
		pair, created, err := loadOrCreateSelfSigned(cfg.StorageDir, cfg.Domain, time.Now())
		if err != nil {
			return nil, fmt.Errorf("front: self-signed certificate: %w", err)
		}
		info := certInfo(ModeSelfSigned, pair.Leaf)
		info.Source = filepath.Join(cfg.StorageDir, SelfSignedCertFile)
		f.self = &info
		tc.Certificates = []tls.Certificate{*pair}
		msg := "self-signed certificate reused; check this SHA-256 fingerprint when a client asks"
		if created {
			msg = "self-signed certificate generated; check this SHA-256 fingerprint when a client asks"
		}
		f.log.Info().Str("domain", cfg.Domain).Str("sha256", info.SHA256).Time("not_after", info.NotAfter).
			Str("file", info.Source).Msg(msg)
		f.notify(Event{Kind: EventLoaded, Domain: cfg.Domain, Cert: &info})
	}
	f.tls = tc
	f.http = httpHandler
	f.https = &httpsHandler{
		proxy: newProxy(upstream, f.log),
		wk:    newWellKnown(&cfg),
		hsts:  cfg.Mode != ModeSelfSigned, // HSTS would forbid clicking through the warning
	}
	if sn := cfg.serverName(); sn != cfg.Domain {
		wk := newWellKnown(&cfg)
		f.log.Info().Str("server_name", sn).Str("domain", cfg.Domain).
			RawJSON("client", wk.client).RawJSON("server", wk.server).
			Msg("the Matrix server name differs from the domain: serve these at https://<server_name>/.well-known/matrix/{client,server}")
	}
	return f, nil
}

func (f *Front) notify(ev Event) {
	if f.cfg.OnEvent != nil {
		f.cfg.OnEvent(ev)
	}
}

// Handler is the HTTPS-side handler (proxy, .well-known, 404).
func (f *Front) Handler() http.Handler { return f.https }

// HTTPHandler is the plain-HTTP handler (ACME HTTP-01, else 308 to HTTPS).
func (f *Front) HTTPHandler() http.Handler { return f.http }

// TLSConfig is the server TLS configuration (a clone).
func (f *Front) TLSConfig() *tls.Config { return f.tls.Clone() }

// WellKnown returns the bodies served at /.well-known/matrix/client and
// /.well-known/matrix/server.
func (f *Front) WellKnown() (client, server []byte) {
	wk := newWellKnown(&f.cfg)
	return wk.client, wk.server
}

// Certificates describes the certificate(s) in service, newest expiry
// first; in acme mode it is empty until one is obtained or loaded.
func (f *Front) Certificates() []CertInfo {
	switch {
	case f.acme != nil:
		return f.acme.certificates()
	case f.files != nil:
		return f.files.certificates()
	case f.self != nil:
		return []CertInfo{*f.self}
	}
	return nil
}

// Serve serves HTTPS on httpsLn and plain HTTP on httpLn until ctx ends, then
// shuts both down gracefully and returns nil; it returns an error if a
// listener fails. httpLn may be nil unless acme mode uses HTTP-01. The
// listeners are closed on return. In acme mode the certificate is
// obtained (or loaded from storage) in the background once serving starts,
// and renewed for as long as Serve runs. Serve can be called once.
func (f *Front) Serve(ctx context.Context, httpsLn, httpLn net.Listener) error {
	if httpsLn == nil {
		return errors.New("front: Serve needs the HTTPS listener")
	}
	if httpLn == nil && f.acme != nil && !f.cfg.DisableHTTPChallenge {
		return errors.New("front: acme mode with the HTTP-01 challenge needs the port-80 listener (or disable HTTP-01)")
	}
	if !f.serving.CompareAndSwap(false, true) {
		return errors.New("front: Serve called twice")
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errLog := log.New(levelWriter{f.log, zerolog.DebugLevel}, "", 0)
	httpsSrv := &http.Server{
		Handler:           f.https,
		TLSConfig:         f.tls.Clone(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       httpsIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	var httpSrv *http.Server
	errc := make(chan error, 2)
	go func() {
		if err := httpsSrv.ServeTLS(httpsLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("front: HTTPS listener: %w", err)
		}
	}()
	logEv := f.log.Info().Str("mode", f.cfg.Mode).Str("domain", f.cfg.Domain).Str("https", httpsLn.Addr().String())
	if httpLn != nil {
		httpSrv = &http.Server{
			Handler:           f.http,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          errLog,
		}
		go func() {
			if err := httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("front: HTTP listener: %w", err)
			}
		}()
		logEv = logEv.Str("http", httpLn.Addr().String())
	}
	logEv.Str("homeserver", f.cfg.Homeserver).Msg("HTTPS front serving")

	if f.acme != nil {
		f.acme.setChallengeAddrs(httpsLn, httpLn)
		if err := f.acme.manage(ctx); err != nil {
			f.shutdown(httpsSrv, httpSrv)
			return fmt.Errorf("front: manage certificate for %s: %w", f.cfg.Domain, err)
		}
	}
	if f.files != nil {
		go func() {
			t := time.NewTicker(max(f.files.every, time.Second)) // handshakes check more often if asked
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					f.files.check(false)
				}
			}
		}()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	f.shutdown(httpsSrv, httpSrv)
	return err
}

func (f *Front) shutdown(servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, s := range servers {
		if s != nil {
			if err := s.Shutdown(ctx); err != nil {
				_ = s.Close()
			}
		}
	}
}

// Close stops certificate maintenance. Serve calls it on return.
func (f *Front) Close() error {
	f.closeOnce.Do(func() {
		if f.acme != nil {
			f.acme.close()
		}
	})
	return nil
}

// Inspect reads the certificate a front with cfg serves (or would serve)
// from disk, without starting anything: for `rcsgate status`. In acme mode
// before the first issuance the error wraps fs.ErrNotExist.
func Inspect(ctx context.Context, cfg Config) (CertInfo, error) {
	if err := cfg.Validate(); err != nil {
		return CertInfo{}, err
	}
	switch cfg.Mode {
	case ModeACME:
		return storedACMECert(ctx, &cfg)
	case ModeProvided:
		b, err := os.ReadFile(cfg.CertFile)
		if err != nil {
			return CertInfo{}, err
		}
		leaf, err := firstCert(b)
		if err != nil {
			return CertInfo{}, fmt.Errorf("%s: %w", cfg.CertFile, err)
		}
		info := certInfo(ModeProvided, leaf)
		info.Source = cfg.CertFile
		return info, nil
	default:
		p := filepath.Join(cfg.StorageDir, SelfSignedCertFile)
		b, err := os.ReadFile(p)
		if err != nil {
			return CertInfo{}, err
		}
		leaf, err := firstCert(b)
		if err != nil {
			return CertInfo{}, fmt.Errorf("%s: %w", p, err)
		}
		info := certInfo(ModeSelfSigned, leaf)
		info.Source = p
		return info, nil
	}
}
