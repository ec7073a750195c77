// Package chanquic holds the device channel's QUIC settings, shared by the
// server (internal/devicechan), the agent and the channel benchmark, so the
// benchmark measures what ships: keep-alives and idle timeouts, receive
// windows, and the server's 0-RTT policy (ReplayGuard). It imports neither
// Matrix nor cgo, so the agent may use it.
package chanquic

import (
	"time"

	"github.com/quic-go/quic-go"
)

// Keep-alives every 20 s hold mobile NAT and conntrack state (Linux drops
// unreplied UDP after 30 s; RFC 9000 suggests under 30 s).
const (
	KeepAlive = 20 * time.Second
	// ClientIdle: the agent gives up on a silent server after this long
	// (it notices a dead server much sooner through pings, see agent/liveness.go).
	ClientIdle = 60 * time.Second
)

// Receive windows. A phone must not make the server buffer much (quic-go
// grows to 6 MiB per stream and 15 MiB per connection by default); 4 MiB
// per stream and 8 MiB per connection still carry ~330 Mbit/s at 100 ms
// RTT, more than a phone's uplink. They start at the full size: growing
// them from quic-go's 512 KiB costs a file's first round trips.
const (
	StreamWindow     = 4 << 20
	ConnectionWindow = 8 << 20
)

// ServerConfig is the server's QUIC configuration; idle is how long a
// silent device is kept. 0-RTT is allowed: ReplayGuard decides per ticket
// whether early data is taken, and devicechan what it does with it.
func ServerConfig(idle time.Duration) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 idle,
		KeepAlivePeriod:                min(KeepAlive, idle/2),
		Allow0RTT:                      true,
		InitialStreamReceiveWindow:     StreamWindow,
		MaxStreamReceiveWindow:         StreamWindow,
		InitialConnectionReceiveWindow: ConnectionWindow,
		MaxConnectionReceiveWindow:     ConnectionWindow,
	}
}

// ClientConfig is the agent's QUIC configuration (pairing and channel). Its
// windows bound what the server can make the phone buffer while a Matrix
// file comes down, and start full so the file does not wait for them to grow.
func ClientConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:                KeepAlive,
		MaxIdleTimeout:                 ClientIdle,
		InitialStreamReceiveWindow:     StreamWindow,
		MaxStreamReceiveWindow:         StreamWindow,
		InitialConnectionReceiveWindow: ConnectionWindow,
		MaxConnectionReceiveWindow:     ConnectionWindow,
	}
}
