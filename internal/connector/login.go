package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

const flowPair = "pair"

func (c *Connector) GetLoginFlows() []bridgev2.LoginFlow {
	return []bridgev2.LoginFlow{{
		Name:        "Pair a phone",
		Description: "Show a one-time pairing code for rcsgate-agent on your Android phone",
		ID:          flowPair,
	}}
}

func (c *Connector) CreateLogin(ctx context.Context, user *bridgev2.User, flowID string) (bridgev2.LoginProcess, error) {
	if flowID != flowPair {
		return nil, fmt.Errorf("unknown login flow %q", flowID)
	}
	return &pairLogin{c: c, user: user, done: make(chan *bridgev2.UserLogin, 1)}, nil
}

// NewPairingLink issues a one-time token for owner and returns the link.
// `rcsgate pair` and the bot's login command both come here.
func NewPairingLink(ctx context.Context, st *store.Store, owner, name string, ttl time.Duration, addrs []string, pin [32]byte) (link, tokenHash string, err error) {
	tok, err := pki.NewToken()
	if err != nil {
		return "", "", err
	}
	hash := pki.HashToken(tok)
	if err := st.AddPairToken(ctx, hash, owner, name, ttl); err != nil {
		return "", "", err
	}
	return wire.PairLink{Addrs: addrs, Token: tok, Pin: pin}.String(), hash, nil
}

type pairLogin struct {
	c         *Connector
	user      *bridgev2.User
	tokenHash string
	expires   time.Time
	done      chan *bridgev2.UserLogin
}

var _ bridgev2.LoginProcessDisplayAndWait = (*pairLogin)(nil)

func (p *pairLogin) Start(ctx context.Context) (*bridgev2.LoginStep, error) {
	link, hash, err := NewPairingLink(ctx, p.c.store, string(p.user.MXID), "phone", p.c.cfg.PairTTL, p.c.cfg.PairAddrs, p.c.ch.Pin())
	if err != nil {
		return nil, fmt.Errorf("issue pairing token: %w", err)
	}
	p.tokenHash, p.expires = hash, time.Now().Add(p.c.cfg.PairTTL)
	p.c.mu.Lock()
	p.c.waiters[hash] = p.done
	p.c.mu.Unlock()
	return &bridgev2.LoginStep{
		Type:   bridgev2.LoginStepTypeDisplayAndWait,
		StepID: "net.rcsgate.pair.qr",
		Instructions: fmt.Sprintf("Scan this code with rcsgate-agent on your phone, or run "+
			"`rcsgate-agent pair '<link>'` with the link it encodes. It works once and expires in %s.", p.c.cfg.PairTTL),
		DisplayAndWaitParams: &bridgev2.LoginDisplayAndWaitParams{Type: bridgev2.LoginDisplayTypeQR, Data: link},
	}, nil
}

func (p *pairLogin) Wait(ctx context.Context) (*bridgev2.LoginStep, error) {
	timer := time.NewTimer(time.Until(p.expires))
	defer timer.Stop()
	select {
	case ul := <-p.done:
		return &bridgev2.LoginStep{
			Type:           bridgev2.LoginStepTypeComplete,
			StepID:         "net.rcsgate.pair.complete",
			Instructions:   fmt.Sprintf("Paired %s. Open a conversation with `start-chat +<number>`; messages to you from new numbers open rooms by themselves.", ul.RemoteName),
			CompleteParams: &bridgev2.LoginCompleteParams{UserLoginID: ul.ID, UserLogin: ul},
		}, nil
	case <-timer.C:
		return nil, errors.New("the pairing code expired before a phone used it; run login again")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pairLogin) Cancel() {
	p.c.mu.Lock()
	delete(p.c.waiters, p.tokenHash)
	p.c.mu.Unlock()
}

// DevicePaired creates the bridgev2 login for a freshly paired device and
// completes the Matrix login flow that issued its token, if any.
func (c *Connector) DevicePaired(ctx context.Context, dev store.Device, tokenHash string) {
	log := c.br.Log.With().Str("device", dev.ID[:7]).Logger()
	ctx = context.WithoutCancel(ctx)
	user, err := c.br.GetUserByMXID(ctx, id.UserID(dev.Owner))
	if err != nil || user == nil {
		log.Error().Err(err).Msg("Paired device has no Matrix user")
		return
	}
	ul, err := user.NewLogin(ctx, &database.UserLogin{
		ID:         networkid.UserLoginID(dev.ID),
		RemoteName: dev.Name + " (" + dev.ID[:7] + ")",
	}, &bridgev2.NewLoginParams{DeleteOnConflict: true})
	if err != nil {
		log.Error().Err(err).Msg("Creating login for paired device failed")
		return
	}
	ul.Client.Connect(ctx)
	c.mu.Lock()
	waiter := c.waiters[tokenHash]
	delete(c.waiters, tokenHash)
	c.mu.Unlock()
	if waiter != nil {
		waiter <- ul
	}
	log.Info().Msg("Device login created")
}
