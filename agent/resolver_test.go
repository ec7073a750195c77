package agent

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestParseDNSServers(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{nil, nil, false},
		{[]string{"192.0.2.1"}, []string{"192.0.2.1:53"}, false},
		{[]string{"192.0.2.1, 2001:db8::1"}, []string{"192.0.2.1:53", "[2001:db8::1]:53"}, false},
		{[]string{"192.0.2.1:5353", "[2001:db8::1]:54"}, []string{"192.0.2.1:5353", "[2001:db8::1]:54"}, false},
		{[]string{"fe80::1%wlan0"}, []string{"[fe80::1%wlan0]:53"}, false},
		{[]string{"dns.example"}, nil, true},
		{[]string{"192.0.2.1:99999"}, nil, true},
		{[]string{"1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5,1.1.1.6,1.1.1.7,1.1.1.8,1.1.1.9"}, nil, true},
	}
	for _, tt := range tests {
		got, err := ParseDNSServers(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ParseDNSServers(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// fakeDNS answers every A query for name with ip, on a loopback UDP port.
func fakeDNS(t *testing.T, name string, ip [4]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if q.Type == dnsmessage.TypeA && q.Name.String() == name {
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip})
			}
			out, err := b.Finish()
			if err != nil {
				continue
			}
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

// deadUDP is a loopback port nothing listens on (queries are refused).
func deadUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestResolverUsesTheGivenServers(t *testing.T) {
	live := fakeDNS(t, "rcsgate.test.", [4]byte{192, 0, 2, 7})
	var r Resolver
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, servers := range [][]string{{live}, {deadUDP(t), live}} {
		if err := r.SetServers(servers); err != nil {
			t.Fatal(err)
		}
		addrs, err := r.NetResolver().LookupHost(ctx, "rcsgate.test")
		if err != nil {
			t.Fatalf("servers %v: %v", servers, err)
		}
		if !slices.Contains(addrs, "192.0.2.7") {
			t.Fatalf("servers %v: got %v", servers, addrs)
		}
	}
	// Changed while running: the next lookup goes to the new list.
	other := fakeDNS(t, "rcsgate.test.", [4]byte{192, 0, 2, 8})
	if err := r.SetServers([]string{other}); err != nil {
		t.Fatal(err)
	}
	addrs, err := r.NetResolver().LookupHost(ctx, "rcsgate.test")
	if err != nil || !slices.Contains(addrs, "192.0.2.8") {
		t.Fatalf("after the change: %v %v", addrs, err)
	}
}
