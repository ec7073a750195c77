package front

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/rs/zerolog"
)

// acmeSource manages the certificate for Domain with certmagic: its own
// cache (never certmagic's package default) and file storage in StorageDir.
type acmeSource struct {
	domain  string
	log     zerolog.Logger
	notify  func(Event)
	storage *certmagic.FileStorage
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	ports   ChallengePorts

	mu       sync.Mutex
	requests map[bool]time.Time // when the current obtain (false) / renewal (true) started
}

func newACMESource(ctx context.Context, cfg *Config, log zerolog.Logger, notify func(Event)) (*acmeSource, error) {
	roots := cfg.CARoots
	if cfg.CARootsFile != "" {
		pemBytes, err := os.ReadFile(cfg.CARootsFile)
		if err != nil {
			return nil, fmt.Errorf("front: ACME CA roots: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("front: ACME CA roots %s: no PEM certificate found", cfg.CARootsFile)
		}
	}
	if err := os.MkdirAll(cfg.StorageDir, 0o700); err != nil {
		return nil, fmt.Errorf("front: storage dir: %w", err)
	}
	s := &acmeSource{
		domain:   cfg.Domain,
		log:      log,
		notify:   notify,
		storage:  &certmagic.FileStorage{Path: cfg.StorageDir},
		ports:    cfg.ChallengePorts,
		requests: make(map[bool]time.Time),
	}
	// Fail now, with the path in the message, rather than after an ACME
	// order (the classic: $HOME under DynamicUser).
	probe := "front-write-probe"
	if err := s.storage.Store(ctx, probe, []byte("ok")); err != nil {
		return nil, fmt.Errorf("front: storage dir %s is not writable: %w", cfg.StorageDir, err)
	}
	_ = s.storage.Delete(ctx, probe)

	zl := newZapLogger(cfg.Log) // not log: that one already says component=front
	var magic atomic.Pointer[certmagic.Config]
	s.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			if c := magic.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("front: certmagic config not ready")
		},
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             zl,
	})
	ratio := cfg.RenewalWindowRatio
	if ratio == 0 {
		ratio = DefaultRenewalWindowRatio
	}
	s.magic = certmagic.New(s.cache, certmagic.Config{
		RenewalWindowRatio: ratio,
		OnEvent:            s.onEvent,
		ShouldEmitFunc:     func(name string) bool { return name != "tls_get_certificate" },
		DefaultServerName:  cfg.Domain, // clients without SNI (an IP in the URL) still get the certificate
		Storage:            s.storage,
		Logger:             zl,
	})
	s.issuer = certmagic.NewACMEIssuer(s.magic, certmagic.ACMEIssuer{
		CA:                      cfg.ca(),
		Email:                   cfg.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    cfg.DisableHTTPChallenge,
		DisableTLSALPNChallenge: cfg.DisableTLSALPNChallenge,
		TrustedRoots:            roots,
		Logger:                  zl,
	})
	s.magic.Issuers = []certmagic.Issuer{s.issuer}
	magic.Store(s.magic)
	return s, nil
}

// setChallengeAddrs points certmagic's challenge "servers" at the very
// addresses our listeners hold. certmagic always tries to bind the
// challenge port itself; on finding it taken (or refused, without
// CAP_NET_BIND_SERVICE) it dials it and, when that connects, leaves the
// answering to whoever listens there: us, through HTTPChallengeHandler on
// port 80 and GetCertificate (acme-tls/1) on 443. So it never binds.
// Called once from Serve, before any ACME operation.
func (s *acmeSource) setChallengeAddrs(https, http net.Listener) {
	host := func(ln net.Listener) (string, int) {
		h, p, err := net.SplitHostPort(ln.Addr().String())
		if err != nil {
			return "", 0
		}
		n, _ := strconv.Atoi(p)
		return h, n
	}
	httpsHost, httpsPort := host(https)
	s.issuer.ListenHost = httpsHost
	s.issuer.AltTLSALPNPort = httpsPort
	if http != nil {
		httpHost, httpPort := host(http)
		s.issuer.AltHTTPPort = httpPort
		if httpHost != httpsHost {
			s.log.Warn().Str("https", https.Addr().String()).Str("http", http.Addr().String()).
				Msg("the HTTP and HTTPS listeners have different hosts; ACME challenges assume the HTTPS one")
		}
	}
	if s.ports.HTTP != 0 {
		s.issuer.AltHTTPPort = s.ports.HTTP
	}
	if s.ports.TLSALPN != 0 {
		s.issuer.AltTLSALPNPort = s.ports.TLSALPN
	}
}

func (s *acmeSource) manage(ctx context.Context) error {
	return s.magic.ManageAsync(ctx, []string{s.domain})
}

func (s *acmeSource) close() { s.cache.Stop() }

// certificates lists the managed certificates for Domain in the cache,
// newest expiry first.
func (s *acmeSource) certificates() []CertInfo {
	var out []CertInfo
	for _, c := range s.cache.AllMatchingCertificates(s.domain) {
		if c.Leaf == nil {
			continue
		}
		info := certInfo(ModeACME, c.Leaf)
		info.IssuerKey = s.issuer.IssuerKey()
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b CertInfo) int { return b.NotAfter.Compare(a.NotAfter) })
	return out
}

// onEvent logs what matters from certmagic's events (obtaining, obtained,
// renewed, failed, revoked, loaded from storage) and passes it on. It never
// returns an error: that would abort the operation.
func (s *acmeSource) onEvent(ctx context.Context, name string, data map[string]any) error {
	renewal, _ := data["renewal"].(bool)
	identifier, _ := data["identifier"].(string)
	if identifier == "" {
		identifier = s.domain
	}
	issuer, _ := data["issuer"].(string)
	switch name {
	case "cert_obtaining":
		s.mu.Lock()
		s.requests[renewal] = time.Now()
		s.mu.Unlock()
		ev := s.log.Info().Str("domain", identifier).Bool("renewal", renewal)
		if d, ok := data["remaining"].(time.Duration); ok {
			ev = ev.Dur("remaining", d)
		}
		ev.Msg("requesting certificate from the ACME CA")
		s.emit(Event{Kind: EventObtaining, Domain: identifier, Renewal: renewal, Issuer: issuer})

	case "cert_obtained":
		s.mu.Lock()
		started := s.requests[renewal]
		delete(s.requests, renewal)
		s.mu.Unlock()
		kind, msg := EventObtained, "certificate obtained"
		if renewal {
			kind, msg = EventRenewed, "certificate renewed"
		}
		ev := Event{Kind: kind, Domain: identifier, Renewal: renewal, Issuer: issuer}
		if !started.IsZero() {
			ev.Took = time.Since(started)
		}
		le := s.log.Info().Str("domain", identifier).Str("acme_ca", issuer)
		if key, ok := data["certificate_path"].(string); ok {
			if leaf, err := s.loadLeaf(ctx, key); err == nil {
				info := certInfo(ModeACME, leaf)
				info.IssuerKey = issuer
				info.Source = key
				ev.Cert = &info
				le = le.Str("serial", info.Serial).Time("not_after", info.NotAfter).Str("issuer", info.Issuer)
			} else {
				le = le.AnErr("read_error", err)
			}
		}
		if ev.Took > 0 {
			le = le.Dur("took", ev.Took)
		}
		le.Msg(msg)
		s.emit(ev)

	case "cert_failed":
		err, _ := data["error"].(error)
		le := s.log.Error().Err(err).Str("domain", identifier).Bool("renewal", renewal)
		if d, ok := data["remaining"].(time.Duration); ok {
			le = le.Dur("remaining", d)
		}
		le.Msg("could not get a certificate; certmagic retries with backoff")
		s.emit(Event{Kind: EventFailed, Domain: identifier, Renewal: renewal, Err: err})

	case "cert_ocsp_revoked":
		s.log.Error().Str("domain", identifier).Msg("certificate revoked (OCSP); replacing it")
		s.emit(Event{Kind: EventRevoked, Domain: identifier})

	case "cached_managed_cert":
		infos := s.certificates()
		if len(infos) > 0 {
			info := infos[0]
			s.log.Info().Str("domain", s.domain).Str("serial", info.Serial).Time("not_after", info.NotAfter).
				Str("issuer", info.Issuer).Msg("certificate in service")
			s.emit(Event{Kind: EventLoaded, Domain: s.domain, Cert: &info})
		}
	}
	return nil
}

func (s *acmeSource) emit(ev Event) {
	if s.notify != nil {
		s.notify(ev)
	}
}

func (s *acmeSource) loadLeaf(ctx context.Context, key string) (*x509.Certificate, error) {
	b, err := s.storage.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	return firstCert(b)
}

func firstCert(pemBytes []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, pemBytes = pem.Decode(pemBytes)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// storedACMECert reads the certificate certmagic keeps for domain from the
// CA's directory, without starting anything.
func storedACMECert(ctx context.Context, cfg *Config) (CertInfo, error) {
	issuerKey := (&certmagic.ACMEIssuer{CA: cfg.ca()}).IssuerKey()
	key := certmagic.StorageKeys.SiteCert(issuerKey, cfg.Domain)
	b, err := (&certmagic.FileStorage{Path: cfg.StorageDir}).Load(ctx, key)
	if err != nil {
		return CertInfo{}, err
	}
	leaf, err := firstCert(b)
	if err != nil {
		return CertInfo{}, fmt.Errorf("%s: %w", key, err)
	}
	info := certInfo(ModeACME, leaf)
	info.IssuerKey = issuerKey
	info.Source = key
	return info, nil
}
