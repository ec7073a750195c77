package agent

import (
	"context"
	"fmt"
	"net"
	"time"
)

// migrateTimeout bounds probing a new path.
const migrateTimeout = 5 * time.Second

// Connection migration. The channel's socket is bound to the wildcard
// address, so when the phone changes network the kernel simply sends from
// the new source address and the server (quic-go) validates the new path by
// itself; NAT rebinding is handled the same way. On top of that the agent
// watches the source address the kernel would pick to reach the server and,
// when it changes, moves the connection to a fresh socket with quic-go's
// path API (Conn.AddPath on a new Transport, Path.Probe, Path.Switch): the
// new path is validated before use, no new handshake is needed, the control
// stream and everything in flight carry on.

// routeSource returns the local IP the kernel would use to reach raddr. A
// connected UDP socket sends nothing until written to.
func routeSource(raddr *net.UDPAddr) (net.IP, error) {
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, nil
}

// watchNetwork migrates the connection when the local route to the server
// changes (or a test asks for it). It never ends the session by itself: if
// a migration fails, the old path stays in use.
func (s *session) watchNetwork(ctx context.Context) error {
	raddr, ok := s.conn.RemoteAddr().(*net.UDPAddr)
	if !ok {
		<-ctx.Done()
		return context.Cause(ctx)
	}
	last, _ := routeSource(raddr)
	t := time.NewTicker(s.a.cfg.NetCheckInterval)
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		case <-s.a.migrateNow:
			force = true
		case <-s.a.netChanged: // the phone says so: check now
		}
		ip, err := routeSource(raddr)
		if err != nil {
			continue // no route at all: nothing to migrate to yet
		}
		if !force && ip.Equal(last) {
			continue
		}
		if err := s.migrate(ctx); err != nil {
			s.log.Warn().Err(err).Msg("local network changed but the connection could not move to it; staying on the old path")
			continue
		}
		last = ip
	}
}

// migrate moves the connection to a new UDP socket.
func (s *session) migrate(ctx context.Context) error {
	from := s.cc.localAddr().String()
	tr, err := newTransport()
	if err != nil {
		return err
	}
	path, err := s.conn.AddPath(tr)
	if err != nil {
		tr.Close()
		tr.Conn.Close()
		return fmt.Errorf("add path: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	if err := path.Probe(pctx); err != nil {
		_ = path.Close()
		tr.Close()
		tr.Conn.Close()
		return fmt.Errorf("probe new path: %w", err)
	}
	if err := path.Switch(); err != nil {
		_ = path.Close()
		tr.Close()
		tr.Conn.Close()
		return fmt.Errorf("switch to new path: %w", err)
	}
	// The old socket stays open until the connection ends: closing its
	// quic.Transport would close the connection registered on it.
	s.cc.addTransport(tr)
	s.log.Info().Str("from", from).Str("to", tr.Conn.LocalAddr().String()).Msg("connection migrated to a new local address")
	return nil
}
