package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/pki"
)

// ErrPinMismatch is returned when the server's certificate is not the one
// the pairing link pinned.
var ErrPinMismatch = errors.New("server certificate does not match the pairing link's pin")

// Connection tuning shared by pairing and the channel.
const (
	keepAlivePeriod = 20 * time.Second
	maxIdleTimeout  = 60 * time.Second
)

func quicConfig() *quic.Config {
	return &quic.Config{KeepAlivePeriod: keepAlivePeriod, MaxIdleTimeout: maxIdleTimeout}
}

// pinnedTLS returns a TLS 1.3 client config that trusts exactly the server
// certificate whose SPKI hashes to pin, and sets *mismatch when a server
// presented another one (quic-go does not wrap the callback's error, so the
// flag is how the caller tells a pin failure apart).
func pinnedTLS(alpn string, pin [sha256.Size]byte, mismatch *atomic.Bool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		InsecureSkipVerify: true, // replaced by the pin check below, never by nothing
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				mismatch.Store(true)
				return ErrPinMismatch
			}
			got := pki.Pin(cs.PeerCertificates[0])
			if subtle.ConstantTimeCompare(got[:], pin[:]) != 1 {
				mismatch.Store(true)
				return ErrPinMismatch
			}
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("server did not agree to protocol %q", alpn)
			}
			return nil
		},
	}
}

// dialFirst dials addrs in order and returns the first connection that
// completes the handshake. Each failure is kept; a pin mismatch is reported
// with errors.Is(err, ErrPinMismatch).
func dialFirst(ctx context.Context, addrs []string, tlsConf *tls.Config, mismatch *atomic.Bool, perAddr time.Duration) (*quic.Conn, string, error) {
	var errs []error
	for _, addr := range addrs {
		if ctx.Err() != nil {
			break
		}
		mismatch.Store(false)
		dctx, cancel := context.WithTimeout(ctx, perAddr)
		conn, err := quic.DialAddr(dctx, addr, tlsConf.Clone(), quicConfig())
		cancel()
		if err == nil {
			return conn, addr, nil
		}
		if mismatch.Load() {
			err = ErrPinMismatch
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no server address")
	}
	return nil, "", dialErrors(errs)
}

// dialErrors is one failure per address, printed on one line.
type dialErrors []error

func (e dialErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e dialErrors) Unwrap() []error { return e }
