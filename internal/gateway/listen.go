package gateway

import (
	"context"
	"fmt"
	"net"

	"github.com/rs/zerolog"
)

// setUp binds, from the config, every socket that was not handed over
// (by systemd through internal/sysd, or by a test), and logs where each
// one listens.
func (ls *Listeners) setUp(cfg *Config, log zerolog.Logger) error {
	handed := func(name string, addr net.Addr) {
		log.Info().Str("socket", name).Str("addr", addr.String()).Msg("Using handed-over socket")
	}
	if ls.Appservice == nil {
		l, err := net.Listen("tcp", cfg.Appservice.Listen)
		if err != nil {
			return fmt.Errorf("appservice listener: %w", err)
		}
		ls.Appservice = l
		log.Info().Str("socket", "appservice").Str("addr", l.Addr().String()).Msg("Bound socket from config")
	} else {
		handed("appservice", ls.Appservice.Addr())
	}
	if ls.Channel == nil {
		pc, err := net.ListenPacket("udp", cfg.Channel.Listen)
		if err != nil {
			_ = ls.Appservice.Close()
			return fmt.Errorf("device channel listener: %w", err)
		}
		ls.Channel = pc
		log.Info().Str("socket", "quic").Str("addr", pc.LocalAddr().String()).Msg("Bound socket from config")
	} else {
		handed("quic", ls.Channel.LocalAddr())
	}
	// The HTTPS front needs its two TCP sockets only when it is on.
	for _, sock := range []struct {
		name, def, addr string
		ln              *net.Listener
	}{
		{"https", "[::]:443", cfg.TLS.HTTPSListen, &ls.HTTPS},
		{"http", "[::]:80", cfg.TLS.HTTPListen, &ls.HTTP},
	} {
		switch {
		case *sock.ln != nil:
			handed(sock.name, (*sock.ln).Addr())
		case cfg.TLS.Mode != "":
			l, err := net.Listen("tcp", or(sock.addr, sock.def))
			if err != nil {
				return fmt.Errorf("%s listener: %w", sock.name, err)
			}
			*sock.ln = l
			log.Info().Str("socket", sock.name).Str("addr", l.Addr().String()).Msg("Bound socket from config")
		}
	}
	return nil
}

// StatusLine is what `systemctl status rcsgate` shows: paired (not revoked)
// devices and live device connections. It reads the database, so it doubles
// as the watchdog's health check.
func (g *Gateway) StatusLine(ctx context.Context) (string, error) {
	devs, err := g.Store.Devices(ctx)
	if err != nil {
		return "", err
	}
	paired := 0
	for _, d := range devs {
		if d.Revoked.IsZero() {
			paired++
		}
	}
	noun := "devices"
	if paired == 1 {
		noun = "device"
	}
	return fmt.Sprintf("%d %s paired, %d connected", paired, noun, len(g.Chan.Sessions())), nil
}
