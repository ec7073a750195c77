// Package front is the HTTPS front rcsgate runs before the Matrix
// homeserver: TLS for the public host name (certificates from an ACME CA
// through certmagic, a provided pair, or a self-signed one for LAN
// appliances), a reverse proxy of the Matrix client and federation APIs to
// the homeserver, the /.well-known/matrix documents, and on plain HTTP the
// ACME HTTP-01 answers and a redirect to HTTPS.
//
// The listeners are passed in (from systemd socket activation or bound by
// the caller); nothing here binds a port.
package front

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/rs/zerolog"
)

// Modes: where the HTTPS certificate comes from.
const (
	// ModeACME obtains and renews a certificate from an ACME CA (Let's
	// Encrypt by default) with the HTTP-01 and TLS-ALPN-01 challenges.
	ModeACME = "acme"
	// ModeProvided serves CertFile/KeyFile and reloads them when they change.
	ModeProvided = "provided"
	// ModeSelfSigned generates a self-signed certificate once, keeps it in
	// StorageDir and logs its SHA-256 fingerprint (LAN appliances).
	ModeSelfSigned = "selfsigned"
)

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = certmagic.LetsEncryptProductionCA

// Defaults.
const (
	DefaultPublicPort          = 443
	DefaultRenewalWindowRatio  = certmagic.DefaultRenewalWindowRatio // renew with a third of the lifetime left
	DefaultRenewCheckInterval  = certmagic.DefaultRenewCheckInterval
	DefaultReloadCheckInterval = 10 * time.Second
)

// ChallengePorts are the local ports that answer the ACME challenges.
// Zero means the port of the listener given to Serve (http for HTTP-01,
// https for TLS-ALPN-01), which is right unless a firewall maps ports.
// The CA itself always connects to 80 and 443 (Pebble: httpPort, tlsPort).
type ChallengePorts struct {
	HTTP    int
	TLSALPN int
}

// Config configures a Front. Only Mode, Domain, Homeserver and, for the
// acme and selfsigned modes, StorageDir are required.
type Config struct {
	// Mode is ModeACME, ModeProvided or ModeSelfSigned.
	Mode string
	// Domain is the public host name clients and servers reach, e.g.
	// matrix.example.org (in selfsigned mode it may be an IP address).
	Domain string
	// ServerName is the Matrix server name (the part after ':' in user ids);
	// "" means Domain. When it differs from Domain, the .well-known
	// documents must also be served at https://<ServerName>/ and the front
	// logs what to serve there.
	ServerName string
	// PublicPort is the HTTPS port the world reaches; 0 means 443. It goes
	// into the .well-known documents and the redirect from plain HTTP.
	PublicPort int

	// Email is the ACME account contact (optional, recommended).
	Email string
	// CA is the ACME directory URL; "" means Let's Encrypt production.
	// Choosing acme mode means agreeing to the CA's subscriber agreement.
	CA string
	// CARoots are the roots to trust for the ACME server's own HTTPS
	// (tests with Pebble); nil means the system roots. CARootsFile is the
	// same as a PEM file; set at most one of the two.
	CARoots     *x509.CertPool
	CARootsFile string
	// StorageDir holds the ACME account and certificates (acme mode) or the
	// generated pair (selfsigned mode), e.g. <state>/certmagic. certmagic's
	// default under $HOME fails under DynamicUser; it is never used.
	StorageDir string

	// CertFile and KeyFile are the PEM pair for provided mode (the chain
	// goes in CertFile, leaf first). They are reloaded when they change.
	CertFile string
	KeyFile  string
	// ReloadCheckInterval is how often, at most, provided mode looks at the
	// files' modification times (on a handshake and on a timer); 0 means 10s.
	ReloadCheckInterval time.Duration

	// Homeserver is the upstream URL, e.g. http://127.0.0.1:6167.
	Homeserver string

	// ChallengePorts overrides the local challenge ports (see its doc).
	ChallengePorts ChallengePorts
	// DisableHTTPChallenge and DisableTLSALPNChallenge turn one challenge
	// type off (not both).
	DisableHTTPChallenge    bool
	DisableTLSALPNChallenge bool
	// RenewalWindowRatio is the fraction of a certificate's lifetime left
	// when renewal starts; 0 means 1/3. The CA's renewal info (ARI) may
	// make it earlier, never later.
	RenewalWindowRatio float64
	// RenewCheckInterval is how often certificates are checked for renewal;
	// 0 means certmagic's default (10 minutes). Tests make it short.
	RenewCheckInterval time.Duration

	// OnEvent, if set, is called for certificate events (obtained, renewed,
	// failed, ...) after they are logged. It must not block for long.
	OnEvent func(Event)
	// Log receives everything, certmagic's own log included (one level
	// quieter than certmagic's, see zaplog.go).
	Log zerolog.Logger
}

func (c *Config) publicPort() int {
	if c.PublicPort == 0 {
		return DefaultPublicPort
	}
	return c.PublicPort
}

func (c *Config) serverName() string {
	if c.ServerName == "" {
		return c.Domain
	}
	return c.ServerName
}

func (c *Config) ca() string {
	if c.CA == "" {
		return LetsEncryptProduction
	}
	return c.CA
}

// publicHost is Domain, with the port when it is not 443.
func (c *Config) publicHost() string {
	if p := c.publicPort(); p != 443 {
		return net.JoinHostPort(c.Domain, fmt.Sprint(p))
	}
	if strings.Contains(c.Domain, ":") { // IPv6 literal
		return "[" + c.Domain + "]"
	}
	return c.Domain
}

// Validate reports every problem in the config at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("front: "+format, args...)) }

	switch c.Mode {
	case ModeACME, ModeProvided, ModeSelfSigned:
	case "":
		bad("mode is required: %q, %q or %q", ModeACME, ModeProvided, ModeSelfSigned)
	default:
		bad("mode %q: want %q, %q or %q", c.Mode, ModeACME, ModeProvided, ModeSelfSigned)
	}

	if err := checkDomain(c.Domain, c.Mode); err != nil {
		bad("domain %q: %v", c.Domain, err)
	}
	if c.ServerName != "" {
		host := c.ServerName
		if h, p, err := net.SplitHostPort(c.ServerName); err == nil {
			host = h
			if n, err := parsePort(p); err != nil || n == 0 {
				bad("server name %q: bad port", c.ServerName)
			}
		}
		if err := checkHostname(host, true); err != nil {
			bad("server name %q: %v", c.ServerName, err)
		}
	}
	if c.PublicPort < 0 || c.PublicPort > 65535 {
		bad("public port %d: out of range", c.PublicPort)
	}

	if c.Homeserver == "" {
		bad("homeserver URL is required (e.g. http://127.0.0.1:6167)")
	} else if u, err := url.Parse(c.Homeserver); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("homeserver URL %q: want http://host:port or https://host:port", c.Homeserver)
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		bad("homeserver URL %q: no query, fragment or user info allowed", c.Homeserver)
	}

	if c.ReloadCheckInterval < 0 || c.RenewCheckInterval < 0 {
		bad("intervals must not be negative")
	}

	switch c.Mode {
	case ModeACME:
		if c.StorageDir == "" {
			bad("storage dir is required in acme mode (ACME account and certificates live there, e.g. <state>/certmagic)")
		}
		if c.Email != "" {
			if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
				bad("email %q: not a plain address like admin@example.org", c.Email)
			}
		}
		if c.CA != "" {
			if u, err := url.Parse(c.CA); err != nil || u.Scheme != "https" || u.Host == "" {
				bad("ACME CA %q: want the https:// URL of an ACME directory", c.CA)
			}
		}
		if c.CARoots != nil && c.CARootsFile != "" {
			bad("set CA roots as a pool or as a file, not both")
		}
		if c.DisableHTTPChallenge && c.DisableTLSALPNChallenge {
			bad("both ACME challenges disabled: enable HTTP-01 (port 80) or TLS-ALPN-01 (port 443)")
		}
		for name, p := range map[string]int{"HTTP": c.ChallengePorts.HTTP, "TLS-ALPN": c.ChallengePorts.TLSALPN} {
			if p < 0 || p > 65535 {
				bad("%s challenge port %d: out of range", name, p)
			}
		}
		if c.RenewalWindowRatio < 0 || c.RenewalWindowRatio >= 1 {
			bad("renewal window ratio %v: want a fraction in (0, 1), or 0 for the default 1/3", c.RenewalWindowRatio)
		}
		if c.ca() == LetsEncryptProduction && c.Domain != "" && !certmagic.SubjectQualifiesForPublicCert(c.Domain) {
			bad("domain %q: Let's Encrypt does not issue certificates for internal names; use mode %q", c.Domain, ModeSelfSigned)
		}
	case ModeProvided:
		if c.CertFile == "" || c.KeyFile == "" {
			bad("provided mode needs both a certificate file and a key file")
		}
	case ModeSelfSigned:
		if c.StorageDir == "" {
			bad("storage dir is required in selfsigned mode (the generated certificate is kept there)")
		}
	}
	return errors.Join(errs...)
}

func checkDomain(d, mode string) error {
	if d == "" {
		return errors.New("required: the public host name, e.g. matrix.example.org")
	}
	if strings.Contains(d, "://") || strings.ContainsAny(d, "/?#@") {
		return errors.New("want a bare host name, without scheme or path")
	}
	if ip := net.ParseIP(d); ip != nil {
		if mode == ModeSelfSigned {
			return nil
		}
		return errors.New("an IP address needs selfsigned mode")
	}
	if strings.Contains(d, "*") {
		return errors.New("wildcards are not supported")
	}
	return checkHostname(d, false)
}

func checkHostname(h string, allowIP bool) error {
	if allowIP && net.ParseIP(strings.Trim(h, "[]")) != nil {
		return nil
	}
	if h == "" || len(h) > 253 {
		return errors.New("bad length")
	}
	if h != strings.ToLower(h) {
		return errors.New("must be lower case")
	}
	if strings.HasSuffix(h, ".") {
		return errors.New("no trailing dot")
	}
	if strings.Contains(h, ":") {
		return errors.New("no port here")
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a label starts or ends with '-'")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q not allowed", r)
			}
		}
	}
	return nil
}

func parsePort(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}
