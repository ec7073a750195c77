package connector

import (
	"context"
	"time"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A phone that is connected but does not send what it took is the silent
// failure people blame bridges for. After ConfirmAfter the sender's status
// says so; after UnresponsiveAfter without any send reported (a chat the
// phone cannot send to does not hold up the others, so their sends show
// the phone is alive) the device's logins say the phone is not responding,
// until it reports a send again.

// watchLoop checks unconfirmed messages every few seconds.
func (c *Connector) watchLoop(ctx context.Context) {
	every := min(c.cfg.ConfirmAfter/4, 5*time.Second)
	t := time.NewTicker(max(every, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.checkUnconfirmed(ctx)
	}
}

func (c *Connector) checkUnconfirmed(ctx context.Context) {
	now := time.Now()
	devices, err := c.store.Devices(ctx)
	if err != nil {
		c.br.Log.Err(err).Msg("Checking unconfirmed messages failed")
		return
	}
	// A phone is only late with what it had time for: count from when it
	// connected, not from when a message was queued for an offline phone.
	since := make(map[string]time.Time, len(devices))
	for _, d := range devices {
		if c.ch.Connected(d.ID) && !d.Connected.IsZero() {
			since[d.ID] = d.Connected
		}
	}
	late, err := c.store.Unconfirmed(ctx, now.Add(-c.cfg.ConfirmAfter))
	if err != nil {
		c.br.Log.Err(err).Msg("Checking unconfirmed messages failed")
		return
	}
	for _, m := range late {
		up, ok := since[m.DeviceID]
		if !ok || now.Sub(up) < c.cfg.ConfirmAfter {
			continue // offline (its status already says so) or just back
		}
		c.notifyUnconfirmed(ctx, m.MsgID, m.RoomID, m.Sender, m.MsgType)
		if err := c.store.MarkWarned(ctx, m.MsgID); err != nil {
			c.br.Log.Err(err).Msg("Recording an unconfirmed warning failed")
		}
	}
	for _, d := range devices {
		oldest, any, err := c.store.OldestUnconfirmed(ctx, d.ID)
		if err != nil {
			continue
		}
		up, ok := since[d.ID]
		stuck := any && ok && now.Sub(oldest) > c.cfg.UnresponsiveAfter && now.Sub(up) > c.cfg.UnresponsiveAfter
		if stuck {
			if last, sent, err := c.store.LastConfirmed(ctx, d.ID); err == nil && sent && now.Sub(last) <= c.cfg.UnresponsiveAfter {
				stuck = false // other chats go through: it is that chat, not the phone
			}
		}
		c.setUnresponsive(d.ID, stuck)
	}
}

// notifyUnconfirmed updates the sender's status: still pending, with why.
func (c *Connector) notifyUnconfirmed(ctx context.Context, msgID, roomID, sender, msgType string) {
	if c.status == nil {
		return
	}
	c.status.order.Lock()
	defer c.status.order.Unlock()
	ms := bridgev2.MessageStatus{Status: event.MessageStatusPending, ErrorReason: event.MessageStatusNetworkError,
		Message: "The phone has not confirmed this message yet: it is connected but has not sent it"}
	c.status.shown[msgID] = true // its outcome must follow
	c.status.enqueue(ms, bridgev2.MessageStatusEventInfo{RoomID: id.RoomID(roomID), SourceEventID: id.EventID(msgID),
		EventType: event.EventMessage, MessageType: event.MessageType(msgType), Sender: id.UserID(sender)})
}

// setUnresponsive changes the device's bridge state when stuck changes.
func (c *Connector) setUnresponsive(dev string, stuck bool) {
	c.mu.Lock()
	was := c.unresponsive[dev]
	if stuck {
		c.unresponsive[dev] = true
	} else {
		delete(c.unresponsive, dev)
	}
	c.mu.Unlock()
	if was == stuck {
		return
	}
	log := c.br.Log.With().Str("device", dev[:7]).Logger()
	for _, ul := range c.deviceLogins(dev) {
		if stuck {
			ul.BridgeState.Send(status.BridgeState{StateEvent: status.StateTransientDisconnect, Error: "rcs-phone-not-responding",
				Message: "The phone is connected but has not sent messages for " + c.cfg.UnresponsiveAfter.String()})
		} else {
			ul.BridgeState.Send(status.BridgeState{StateEvent: status.StateConnected})
		}
	}
	if stuck {
		log.Warn().Dur("for", c.cfg.UnresponsiveAfter).Msg("Phone not responding: connected but not sending")
	} else {
		log.Info().Msg("Phone responding again")
	}
}
