package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
)

// Go built without cgo resolves names itself from /etc/resolv.conf. Android
// has no such file, so Go falls back to 127.0.0.1:53 and every lookup of
// the server's name fails. The phone app knows the network's DNS servers
// (LinkProperties.getDnsServers) and hands them over (the exec protocol's
// "network" line, or --dns); a Resolver installed as net.DefaultResolver
// sends Go's own DNS queries there. Go's resolver tries each server it was
// configured with (two on Android) twice; each try takes the next of ours,
// so a dead server is skipped on the next try.

// MaxDNSServers bounds how many servers a Resolver keeps.
const MaxDNSServers = 8

// Resolver sends the Go resolver's queries to a list of DNS servers that
// can change while the agent runs. With no servers it dials what Go asks
// for (the system's configuration).
type Resolver struct {
	servers atomic.Pointer[[]string] // host:port
	next    atomic.Uint32
	dialer  net.Dialer
}

// ParseDNSServers reads a list of DNS servers: IPv4 or IPv6 addresses,
// optionally with a port ("192.0.2.1", "[2001:db8::1]:53"), separated by
// commas or spaces. Link-local IPv6 zones ("fe80::1%wlan0") are kept.
func ParseDNSServers(list []string) ([]string, error) {
	var out []string
	for _, item := range list {
		for _, s := range strings.FieldsFunc(item, func(r rune) bool { return r == ',' || r == ' ' }) {
			if len(out) == MaxDNSServers {
				return nil, fmt.Errorf("dns: more than %d servers", MaxDNSServers)
			}
			if ap, err := netip.ParseAddrPort(s); err == nil {
				out = append(out, ap.String())
				continue
			}
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("dns: %q is not an IP address (with an optional port)", clipString(s, 64))
			}
			out = append(out, netip.AddrPortFrom(ip, 53).String())
		}
	}
	return out, nil
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// SetServers replaces the servers (see ParseDNSServers); an empty list goes
// back to the system's configuration.
func (r *Resolver) SetServers(list []string) error {
	servers, err := ParseDNSServers(list)
	if err != nil {
		return err
	}
	r.servers.Store(&servers)
	return nil
}

// Servers returns the servers in use (host:port), nil for the system's.
func (r *Resolver) Servers() []string {
	if p := r.servers.Load(); p != nil && len(*p) > 0 {
		return append([]string(nil), (*p)...)
	}
	return nil
}

// Dial is net.Resolver's Dial: it ignores the server Go chose and takes
// the next of ours.
func (r *Resolver) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if s := r.Servers(); len(s) > 0 {
		address = s[int(r.next.Add(1)-1)%len(s)]
	}
	c, err := r.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dns server %s: %w", address, err)
	}
	return c, nil
}

// NetResolver is a net.Resolver that uses r.
func (r *Resolver) NetResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: r.Dial}
}

// Install makes r the process's default resolver (net.DefaultResolver),
// which quic-go's dials and every other lookup of the agent use. Call it
// before the agent dials (it is not synchronised with lookups).
func (r *Resolver) Install() {
	net.DefaultResolver = r.NetResolver()
}
