package devicechan

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// pairDeadline bounds a whole pairing connection; the request must come
// within helloDeadline of the handshake.
const pairDeadline = 30 * time.Second

// handlePair signs a device's CSR in exchange for a one-time token.
func (s *Server) handlePair(ctx context.Context, conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(ctx, pairDeadline)
	defer cancel()
	actx, acancel := context.WithTimeout(ctx, helloDeadline)
	str, err := conn.AcceptStream(actx)
	acancel()
	if err != nil {
		s.refused(conn.RemoteAddr(), true, "pairing", "no_request", err, "")
		_ = conn.CloseWithError(codeProtocol, "no pairing stream")
		return
	}
	_ = str.SetDeadline(time.Now().Add(helloDeadline))
	refuse := func(code, msg string, err error) {
		s.refused(conn.RemoteAddr(), true, "pairing", code, err, "")
		_ = str.SetWriteDeadline(time.Now().Add(refuseLinger))
		_ = wire.WriteMsg(str, wire.Error{Code: code, Message: msg})
		_ = str.Close()
		lingerClose(conn, codeProtocol, code) // the agent closes once it has read the refusal
	}
	m, err := wire.ReadMsg(str)
	if err != nil {
		refuse("bad_request", "malformed pairing request", err)
		return
	}
	req, ok := m.(wire.PairRequest)
	if !ok {
		refuse("bad_request", "expected a pairing request", nil)
		return
	}
	tok, err := s.store.ConsumeToken(ctx, pki.HashToken(req.Token))
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		refuse("token_unknown", "this pairing token is not known; run `rcsgate pair` again", err)
		return
	case errors.Is(err, store.ErrTokenUsed):
		refuse("token_used", "this pairing token was already used; run `rcsgate pair` again", err)
		return
	case errors.Is(err, store.ErrTokenExpired):
		refuse("token_expired", "this pairing token has expired; run `rcsgate pair` again", err)
		return
	case err != nil:
		refuse("internal", "server error", err)
		return
	}
	// The token is spent either way: a link for someone the bridge does not
	// let in must not work later either.
	if err := s.handler.MayPair(ctx, tok.Owner); err != nil {
		refuse("not_allowed", "the Matrix user this link was made for may not use this bridge; ask its admin", err)
		return
	}
	name := tok.Name
	if req.Name != "" {
		name = req.Name
	}
	certDER, id, err := s.ca.SignCSR(req.CSR, name)
	if err != nil {
		refuse("bad_csr", "the certificate request was refused", err)
		return
	}
	dev := store.Device{ID: id.String(), Name: name, Owner: tok.Owner, CertDER: certDER}
	if err := s.store.AddDevice(ctx, dev); err != nil {
		refuse("internal", "server error", err)
		return
	}
	if err := wire.WriteMsg(str, wire.PairResponse{Cert: certDER, CA: s.ca.Cert.Raw, DeviceID: dev.ID}); err != nil {
		s.log.Warn().Err(err).Str("device", id.Short()).Msg("Pairing answer not delivered")
		return
	}
	_ = str.Close()
	s.log.Info().Str("device", id.Short()).Msg("Device paired")
	s.handler.DevicePaired(ctx, dev, pki.HashToken(req.Token))
	select { // the agent closes once it has stored its certificate
	case <-conn.Context().Done():
	case <-ctx.Done():
		_ = conn.CloseWithError(codeOK, "")
	}
}
