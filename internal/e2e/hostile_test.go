package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// evilPhone speaks the device protocol with a paired device's certificate
// and sends whatever the test likes: a phone under an attacker's control.
type evilPhone struct {
	conn *quic.Conn
	str  *quic.Stream
	acks chan wire.Ack
	errs chan wire.Error
}

// dialEvil connects with the identity in dir and says hello.
func dialEvil(ctx context.Context, dir string, hello wire.Hello) (*evilPhone, error) {
	ident, err := agent.LoadIdentity(dir)
	if err != nil {
		return nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{ident.Cert.Raw}, PrivateKey: ident.Key, Leaf: ident.Cert}
	conn, err := quic.DialAddr(ctx, ident.Server.Addrs[0], &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		NextProtos: []string{wire.ALPNChannel}, Certificates: []tls.Certificate{cert}}, &quic.Config{KeepAlivePeriod: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if err := wire.WriteMsg(str, hello); err != nil {
		return nil, err
	}
	p := &evilPhone{conn: conn, str: str, acks: make(chan wire.Ack, 64), errs: make(chan wire.Error, 4)}
	first, err := wire.ReadMsg(str)
	if err != nil {
		return p, fmt.Errorf("no welcome: %w", err)
	}
	switch m := first.(type) {
	case wire.Welcome:
	case wire.Error:
		return p, m
	default:
		return p, fmt.Errorf("answered hello with %s", m.FrameType())
	}
	go func() {
		for {
			m, err := wire.ReadMsg(str)
			if err != nil {
				return
			}
			switch m := m.(type) {
			case wire.Ack:
				p.acks <- m
			case wire.Ping:
				_ = wire.WriteMsg(str, wire.Pong(m))
			case wire.Error:
				p.errs <- m
			}
		}
	}()
	return p, nil
}

// waitAcks waits until the server acked every message id and status id
// (it acks only once the bridge has handled each).
func (p *evilPhone) waitAcks(ctx context.Context, ids, statuses []string) error {
	want := map[string]bool{}
	for _, i := range ids {
		want["m:"+i] = true
	}
	for _, s := range statuses {
		want["s:"+s] = true
	}
	for len(want) > 0 {
		select {
		case a := <-p.acks:
			for _, i := range a.IDs {
				delete(want, "m:"+i)
			}
			for _, s := range a.Statuses {
				delete(want, "s:"+s.ID)
			}
		case <-ctx.Done():
			return fmt.Errorf("server did not ack %v: %w", want, ctx.Err())
		}
	}
	return nil
}

// TestHostilePeer: two people share a bridge, each with a paired phone;
// Bob's phone is in an attacker's hands (and so is Bob). Nothing Bob or
// his phone does reaches Alice's chats, and nothing lets them hold the
// server's resources.
func TestHostilePeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Contact sync on: a phone's address book names ghosts.
	st, alice, mgmtA := upWith(t, ctx, harness.Options{Configure: func(c *gateway.Config) { c.Bridge.ContactSync = true }})
	bot := id.UserID(st.Info.BotUserID)
	const contact, stranger = "+12025550123", "+12025550177"
	portalA, ghostA, err := alice.StartChat(ctx, mgmtA, contact)
	if err != nil {
		t.Fatal(err)
	}

	// Bob: a user of the same homeserver with a phone of his own.
	const bobPass = "bob-has-a-long-password"
	bobID, err := st.HS.RegisterUser(ctx, "bob", bobPass, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Run(ctx, "rcsgate", "pair", "--config", st.ConfigPath, "--user", bobID, "--name", "bob-phone", "--no-qr")
	if err != nil {
		t.Fatalf("pair for bob: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	link, err := wire.ParsePairLink(lines[len(lines)-1])
	if err != nil {
		t.Fatal(err)
	}
	bobDir := filepath.Join(t.TempDir(), "bob-phone")
	bobDev, err := agent.Pair(ctx, link, bobDir, agent.PairOptions{Name: "bob-phone"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := harness.Login(ctx, st.Info.Homeserver, bobID, bobPass)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	// Alice writes to her contact; her phone sends it.
	secret := "for alice's contact only " + nonce(t)
	evtA, err := alice.SendText(ctx, portalA, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == secret }); err != nil {
		t.Fatal(err)
	}
	roomsA, roomsB := joinedRooms(t, ctx, alice), joinedRooms(t, ctx, bob)

	var evil *evilPhone // bob's phone, once it is connected
	defer func() {
		if evil != nil {
			_ = evil.conn.CloseWithError(0, "")
		}
	}()
	lie := "Your bank account is locked, call +1 202 555 0199 now"

	// A hello past the bounds is refused with a clear error.
	t.Run("hello past the bounds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		if _, err := dialEvil(ctx, bobDir, wire.Hello{Proto: 1, Agent: "evil/1", SIMs: []int{1, 2, 3, 4, 5, 6, 7, 8, 9}}); err == nil ||
			!strings.Contains(err.Error(), "SIM slots") {
			t.Fatalf("hello with 9 SIM slots: %v, want a refusal naming the SIM slots", err)
		}
	})
	// Bob's phone reports on alice's message: failed, read, receipts into other chats.
	t.Run("reports on another's message", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		var err error
		evil, err = dialEvil(ctx, bobDir, wire.Hello{Proto: 1, Agent: "evil/1", Backend: "sim", Features: []string{wire.FeatureStatusAck}})
		if err != nil {
			t.Fatal(err)
		}
		frames := []wire.Msg{
			wire.Status{ID: evtA.EventID.String(), State: wire.StateFailed, Reason: lie, TSMS: time.Now().UnixMilli()},
			wire.Message{ID: "evil-1", Kind: wire.KindReceipt, Chat: contact, Target: evtA.EventID.String(), State: wire.StateFailed, Reason: lie},
			wire.Message{ID: "evil-2", Kind: wire.KindReceipt, Chat: stranger, Target: evtA.EventID.String(), State: wire.StateRead},
			wire.Message{ID: "evil-3", Kind: wire.KindRead, Chat: stranger, Target: evtA.EventID.String()},
			wire.Message{ID: "evil-4", Kind: wire.KindReceipt, Chat: stranger, Target: "$not-a-message", State: wire.StateRead},
		}
		for _, f := range frames {
			if err := wire.WriteMsg(evil.str, f); err != nil {
				t.Fatal(err)
			}
		}
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		err = evil.waitAcks(actx, []string{"evil-1", "evil-2", "evil-3", "evil-4"}, []string{evtA.EventID.String()})
		acancel()
		if err != nil {
			t.Fatal(err)
		}
		// Statuses go out in order through one worker: once a later message's
		// success shows, anything the lies had caused would have shown first.
		afterMarker(t, ctx, alice, portalA)
		for _, e := range alice.Events() {
			if e.RoomID != portalA {
				continue
			}
			if statusOf(portalA, evtA.EventID, event.MessageStatusFail)(e) {
				t.Fatal("bob's phone marked alice's message failed")
			}
			if e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "bank account") {
				t.Fatalf("bob's phone's words reached alice's room: %q", e.Content.AsMessage().Body)
			}
		}
		// A portal made for the lies would have invited its owner before the
		// server acked them, so before the marker's status in the sync stream.
		if r := newRooms(alice, roomsA); len(r) > 0 {
			t.Fatalf("bob's phone made rooms in alice's account: %v", r)
		}
		if r := newRooms(bob, roomsB); len(r) > 0 {
			t.Fatalf("a receipt made rooms in bob's account: %v", r)
		}
		if n := bytes.Count(st.GatewayLog(), []byte("Refused a phone's frame about a message that was not sent to that phone")); n == 0 || n > 5 {
			t.Fatalf("%d refusal lines for bob's frames, want 1 to 5 (rate limited)", n)
		}
	})
	// Bob, invited into alice's portal, cannot use its commands.
	t.Run("portal commands are the owner's", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		from := bob.Now()
		if _, err := alice.InviteUser(ctx, portalA, &mautrix.ReqInviteUser{UserID: id.UserID(bobID)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := bob.WaitEvent(ctx, from, harness.Joined(portalA, id.UserID(bobID))); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"!rcs whois", "!rcs transport sms"} {
			from = bob.Now()
			if _, err := bob.SendText(ctx, portalA, cmd); err != nil {
				t.Fatal(err)
			}
			if _, _, err := bob.WaitEvent(ctx, from, botSays(bob, portalA, bot, "Only the person whose phone")); err != nil {
				t.Fatalf("%s from bob: no refusal: %v", cmd, err)
			}
		}
		for _, e := range bob.Events() {
			if e.RoomID == portalA && e.Sender == bot && strings.Contains(e.Content.AsMessage().Body, "555") {
				t.Fatalf("the bot told bob alice's contact's number: %q", e.Content.AsMessage().Body)
			}
		}
	})
	// Bob's own chat with the same number has its own settings.
	t.Run("chat settings are per user", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		mgmtB, err := bob.OpenDM(ctx, bot)
		if err != nil {
			t.Fatal(err)
		}
		portalB, _, err := bob.StartChat(ctx, mgmtB, contact)
		if err != nil {
			t.Fatal(err)
		}
		from := bob.Now()
		if _, err := bob.SendText(ctx, portalB, "!rcs transport sms"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := bob.WaitEvent(ctx, from, botSays(bob, portalB, bot, "always go as SMS")); err != nil {
			t.Fatal(err)
		}
		from = alice.Now()
		if _, err := alice.SendText(ctx, portalA, "!rcs transport"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := alice.WaitEvent(ctx, from, botSays(alice, portalA, bot, "Outgoing: auto")); err != nil {
			t.Fatalf("alice's chat did not keep its own transport setting: %v", err)
		}
		after := "after bob chose sms " + nonce(t)
		if _, err := alice.SendText(ctx, portalA, after); err != nil {
			t.Fatal(err)
		}
		sent, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == after })
		if err != nil {
			t.Fatal(err)
		}
		if sent.Transport == wire.TransportSMS {
			t.Fatal("bob's transport choice reached alice's phone")
		}
	})
	// Bob's phone's address book does not rename alice's contact.
	t.Run("contact names stay with their phone", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		if evil == nil {
			t.Skip("bob's phone is not connected")
		}
		card := wire.Message{ID: "evil-5", Kind: wire.KindContact, Chat: contact, From: contact, TSMS: time.Now().UnixMilli(),
			Contact: &wire.Contact{Name: "Bank Security"}}
		if err := wire.WriteMsg(evil.str, card); err != nil {
			t.Fatal(err)
		}
		if err := evil.waitAcks(ctx, []string{"evil-5"}, nil); err != nil {
			t.Fatal(err)
		}
		afterMarker(t, ctx, alice, portalA)
		for _, e := range alice.Events() {
			if e.Type != event.StateMember || e.GetStateKey() != string(ghostA) {
				continue
			}
			_ = e.Content.ParseRaw(e.Type)
			if name := e.Content.AsMember().Displayname; strings.Contains(name, "Bank") {
				t.Fatalf("bob's phone renamed alice's contact to %q", name)
			}
		}
	})
	// Strangers are refused in the handshake while no pairing link is open.
	t.Run("strangers refused in the handshake", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		for i := range 20 {
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := quic.DialAddr(dctx, link.Addrs[0], &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
				NextProtos: []string{wire.ALPNPair}}, nil)
			dcancel()
			var te *quic.TransportError
			if !errors.As(err, &te) || te.ErrorCode != quic.TransportErrorCode(0x100+120) {
				t.Fatalf("pairing attempt %d with no link open: %v, want no_application_protocol", i, err)
			}
		}
	})
	// Revoked, bob's phone is told, stops, and the server's log stays quiet.
	t.Run("revoked phone stops", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		if out, err := st.Run(ctx, "rcsgate", "device", "revoke", "--config", st.ConfigPath, bobDev.String()); err != nil {
			t.Fatalf("revoke: %v\n%s", err, out)
		}
		if evil != nil {
			select {
			case <-evil.conn.Context().Done():
			case <-time.After(10 * time.Second):
				t.Fatal("revoked phone's connection still open")
			}
		}
		refusedBefore := bytes.Count(st.GatewayLog(), []byte("Refused device handshake"))
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		defer acancel()
		run := exec.CommandContext(actx, filepath.Join(st.Opts.BinDir, "rcsgate-agent"), "run", "--state", bobDir, "--control", "")
		var runOut bytes.Buffer
		run.Stdout, run.Stderr = &runOut, &runOut
		err := run.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(runOut.String(), "unpaired — pair again") {
			t.Fatalf("revoked agent: %v, want exit 3 saying unpaired — pair again\n%s", err, runOut.String())
		}
		status, _ := exec.CommandContext(actx, filepath.Join(st.Opts.BinDir, "rcsgate-agent"), "status", "--state", bobDir).CombinedOutput()
		if !strings.HasPrefix(string(status), "unpaired — pair again") {
			t.Fatalf("status of the revoked phone: %q", status)
		}
		if n := bytes.Count(st.GatewayLog(), []byte("Refused device handshake")) - refusedBefore; n > 1 {
			t.Fatalf("%d refused handshakes logged for one revoked agent, want at most 1", n)
		}
	})
	// Alice's chat works on.
	t.Run("alice's chat works on", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a failed step leaves time for the next
		defer cancel()
		last := "still here " + nonce(t)
		if _, err := alice.SendText(ctx, portalA, last); err != nil {
			t.Fatal(err)
		}
		if _, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == last }); err != nil {
			t.Fatal(err)
		}
	})
	cfg, err := gateway.LoadConfig(st.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(st.GatewayLog(), []byte(lie)) || bytes.Contains(st.GatewayLog(), []byte(cfg.Appservice.HSToken)) {
		t.Fatal("the gateway log holds a phone's words verbatim or a token")
	}
}

// afterMarker sends a message in room and waits until its status shows as
// sent: everything the bridge did before it has reached the client's sync.
func afterMarker(t *testing.T, ctx context.Context, c *harness.Client, room id.RoomID) {
	t.Helper()
	from := c.Now()
	marker, err := c.SendText(ctx, room, "marker "+nonce(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WaitEvent(ctx, from, statusOf(room, marker.EventID, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("no status for the marker: %v", err)
	}
}

func joinedRooms(t *testing.T, ctx context.Context, c *harness.Client) []id.RoomID {
	t.Helper()
	resp, err := c.JoinedRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return resp.JoinedRooms
}

// newRooms lists rooms (not spaces: bridgev2 makes one per login to file
// its portals in) the client was invited to or joined that are not in
// known, from what it synced.
func newRooms(c *harness.Client, known []id.RoomID) []id.RoomID {
	seen := map[id.RoomID]bool{}
	for _, r := range known {
		seen[r] = true
	}
	evts := c.Events()
	for _, e := range evts {
		if e.Type == event.StateCreate {
			_ = e.Content.ParseRaw(e.Type)
			if cr, ok := e.Content.Parsed.(*event.CreateEventContent); ok && cr.Type == event.RoomTypeSpace {
				seen[e.RoomID] = true
			}
		}
	}
	var out []id.RoomID
	for _, e := range evts {
		if e.Type != event.StateMember || e.GetStateKey() != string(c.UserID) || seen[e.RoomID] {
			continue
		}
		_ = e.Content.ParseRaw(e.Type)
		if m := e.Content.AsMember().Membership; m == event.MembershipInvite || m == event.MembershipJoin {
			seen[e.RoomID] = true
			out = append(out, e.RoomID)
		}
	}
	return out
}
