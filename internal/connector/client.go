package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/simplevent"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/internal/phone"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// deviceClient is one paired device as a bridgev2 login.
type deviceClient struct {
	c        *Connector
	login    *bridgev2.UserLogin
	deviceID string
}

var (
	_ bridgev2.NetworkAPI                    = (*deviceClient)(nil)
	_ bridgev2.IdentifierResolvingNetworkAPI = (*deviceClient)(nil)
)

// meID stands for the device owner's own messages.
func (d *deviceClient) meID() networkid.UserID { return networkid.UserID("me." + d.deviceID[:7]) }

func (d *deviceClient) Connect(ctx context.Context) { d.sendState(d.c.ch.Connected(d.deviceID)) }

func (d *deviceClient) sendState(connected bool) {
	if connected {
		d.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateConnected})
		return
	}
	d.login.BridgeState.Send(status.BridgeState{
		StateEvent: status.StateTransientDisconnect,
		Error:      "rcs-phone-offline",
		Message:    "The phone is not connected; messages wait for it",
	})
}

func (d *deviceClient) Disconnect() {}

func (d *deviceClient) IsLoggedIn() bool { return true }

// LogoutRemote unpairs: the device is revoked and its live connection closed.
func (d *deviceClient) LogoutRemote(ctx context.Context) {
	if err := d.c.store.RevokeDevice(ctx, d.deviceID); err != nil {
		d.login.Log.Err(err).Msg("Revoking device on logout failed")
	}
	d.c.ch.Kick(d.deviceID, "logged out")
}

func (d *deviceClient) IsThisUser(ctx context.Context, userID networkid.UserID) bool {
	return userID == d.meID()
}

func (d *deviceClient) GetChatInfo(ctx context.Context, portal *bridgev2.Portal) (*bridgev2.ChatInfo, error) {
	number, err := d.c.store.Contact(ctx, string(portal.ID))
	if err != nil {
		return nil, fmt.Errorf("chat info: %w", err)
	}
	ghost := networkid.UserID(portal.ID)
	roomType := database.RoomTypeDM
	return &bridgev2.ChatInfo{
		Type: &roomType,
		Members: &bridgev2.ChatMemberList{
			IsFull:      true,
			OtherUserID: ghost,
			MemberMap: bridgev2.ChatMemberMap{}.
				Set(bridgev2.ChatMember{EventSender: bridgev2.EventSender{Sender: ghost}, UserInfo: userInfo(number)}).
				Set(bridgev2.ChatMember{EventSender: bridgev2.EventSender{IsFromMe: true, SenderLogin: d.login.ID}}),
		},
	}, nil
}

func userInfo(number string) *bridgev2.UserInfo {
	name := phone.Format(number)
	return &bridgev2.UserInfo{Name: &name, Identifiers: []string{"tel:" + number}}
}

func (d *deviceClient) GetUserInfo(ctx context.Context, ghost *bridgev2.Ghost) (*bridgev2.UserInfo, error) {
	number, err := d.c.store.Contact(ctx, string(ghost.ID))
	if err != nil {
		return nil, fmt.Errorf("user info: %w", err)
	}
	return userInfo(number), nil
}

func (d *deviceClient) GetCapabilities(ctx context.Context, portal *bridgev2.Portal) *event.RoomFeatures {
	return &event.RoomFeatures{ID: "net.rcsgate.capabilities.v1", MaxTextLength: wire.MaxTextLen}
}

// ResolveIdentifier backs `start-chat +12025550100`.
func (d *deviceClient) ResolveIdentifier(ctx context.Context, identifier string, createChat bool) (*bridgev2.ResolveIdentifierResponse, error) {
	number, err := phone.Normalize(identifier)
	if err != nil {
		return nil, bridgev2.WrapRespErrManual(err, "M_INVALID_PARAM", 400)
	}
	uid, err := d.c.contact(ctx, number)
	if err != nil {
		return nil, err
	}
	ghost, err := d.c.br.GetGhostByID(ctx, uid)
	if err != nil {
		return nil, fmt.Errorf("get ghost: %w", err)
	}
	resp := &bridgev2.ResolveIdentifierResponse{Ghost: ghost, UserID: uid, UserInfo: userInfo(number)}
	if createChat {
		resp.Chat = &bridgev2.CreateChatResponse{PortalKey: networkid.PortalKey{ID: networkid.PortalID(uid), Receiver: d.login.ID}}
	}
	return resp, nil
}

// HandleMatrixMessage puts a Matrix message in the device's durable outbox.
// The Matrix event id is the idempotency key, so a transaction the homeserver
// retries after a crash can't send the text twice.
func (d *deviceClient) HandleMatrixMessage(ctx context.Context, msg *bridgev2.MatrixMessage) (*bridgev2.MatrixMessageResponse, error) {
	switch msg.Content.MsgType {
	case event.MsgText, event.MsgNotice, event.MsgEmote:
	default:
		return nil, bridgev2.ErrUnsupportedMessageType
	}
	number, err := d.c.store.Contact(ctx, string(msg.Portal.ID))
	if err != nil {
		return nil, fmt.Errorf("portal has no phone number: %w", err)
	}
	text := msg.Content.Body
	if msg.Content.MsgType == event.MsgEmote {
		text = "* " + text
	}
	if len(text) > wire.MaxTextLen {
		return nil, fmt.Errorf("%w: message longer than %d bytes", bridgev2.ErrUnsupportedMessageType, wire.MaxTextLen)
	}
	wm := wire.Message{ID: string(msg.Event.ID), Chat: number, Text: text, TSMS: msg.Event.Timestamp}
	payload, err := wire.Encode(wm)
	if err != nil {
		return nil, err
	}
	err = d.c.store.EnqueueSent(ctx, store.SentMsg{
		MsgID: wm.ID, DeviceID: d.deviceID, RoomID: string(msg.Event.RoomID),
		Sender: string(msg.Event.Sender), MsgType: string(msg.Content.MsgType),
	}, payload, d.c.cfg.QueueLimit)
	if errors.Is(err, store.ErrQueueFull) {
		return nil, bridgev2.WrapErrorInStatus(err).WithStatus(event.MessageStatusFail).
			WithErrorReason(event.MessageStatusNetworkError).WithIsCertain(true).WithSendNotice(true).
			WithMessage(fmt.Sprintf("Not sent: %d messages already wait for the phone; it has been offline too long", d.c.cfg.QueueLimit))
	} else if err != nil {
		return nil, fmt.Errorf("queue for phone: %w", err)
	}
	d.c.ch.Notify(d.deviceID)
	return &bridgev2.MatrixMessageResponse{DB: &database.Message{
		ID:        networkid.MessageID(wm.ID),
		SenderID:  d.meID(),
		Timestamp: time.UnixMilli(msg.Event.Timestamp),
	}}, nil
}

// HandleInbound turns a phone message into a Matrix message. It returns only
// after bridgev2 has sent it to the homeserver (portal event buffer 0), so the
// ack the device gets means the message is in Matrix.
func (c *Connector) HandleInbound(ctx context.Context, devID string, msg wire.Message) error {
	ul := c.br.GetCachedUserLoginByID(networkid.UserLoginID(devID))
	if ul == nil {
		return fmt.Errorf("device %s has no login", devID[:7])
	}
	from, err := phone.Normalize(msg.From)
	if err != nil {
		// A message we can never place: ack it so the phone stops resending,
		// and say so loudly.
		ul.Log.Error().Str("msg_id", msg.ID).Msg("Dropping phone message with an invalid sender number")
		return nil
	}
	uid, err := c.contact(ctx, from)
	if err != nil {
		return err
	}
	if err := c.settleCrashedSend(ctx, msg.ID); err != nil {
		return err
	}
	if err := c.store.MarkInflight(ctx, msg.ID); err != nil {
		return err
	}
	res := ul.QueueRemoteEvent(&simplevent.Message[wire.Message]{
		EventMeta: simplevent.EventMeta{
			Type:         bridgev2.RemoteEventMessage,
			PortalKey:    networkid.PortalKey{ID: networkid.PortalID(uid), Receiver: ul.ID},
			Sender:       bridgev2.EventSender{Sender: uid},
			CreatePortal: true,
			Timestamp:    time.UnixMilli(msg.TSMS),
		},
		Data:               msg,
		ID:                 networkid.MessageID(msg.ID),
		ConvertMessageFunc: convertText,
		HandleExistingFunc: func(context.Context, *bridgev2.Portal, bridgev2.MatrixAPI, []*database.Message, wire.Message) (bridgev2.UpsertResult, error) {
			return bridgev2.UpsertResult{}, nil // already bridged: a resend after a lost ack
		},
	})
	if !res.Success && !res.Ignored {
		if res.Error != nil {
			return res.Error
		}
		return errors.New("bridge did not handle the message")
	}
	return c.store.ClearInflight(ctx, msg.ID)
}

// crashSettle is how long after a restart a message whose Matrix send was
// cut short waits before it is sent again. The resend carries the same
// transaction id (idempotentIntent), which the homeserver deduplicates — but
// only once it has finished the first request, which may still be running
// when a crashed bridge is back within milliseconds.
const crashSettle = 5 * time.Second

func (c *Connector) settleCrashedSend(ctx context.Context, msgID string) error {
	crashed, err := c.store.InflightBefore(ctx, msgID, c.started)
	if err != nil || !crashed {
		return err
	}
	wait := time.Until(c.started.Add(crashSettle))
	if wait <= 0 {
		return nil
	}
	zerolog.Ctx(ctx).Info().Str("msg_id", msgID).Dur("wait", wait).
		Msg("Message was being sent when the bridge stopped; letting the homeserver finish first")
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func convertText(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, msg wire.Message) (*bridgev2.ConvertedMessage, error) {
	return &bridgev2.ConvertedMessage{Parts: []*bridgev2.ConvertedMessagePart{{
		Type:    event.EventMessage,
		Content: &event.MessageEventContent{MsgType: event.MsgText, Body: msg.Text},
	}}}, nil
}

// HandleStatus turns the phone's delivery states into Matrix send statuses.
func (c *Connector) HandleStatus(ctx context.Context, devID string, st wire.Status) {
	log := c.br.Log.With().Str("device", devID[:7]).Str("msg_id", st.ID).Logger()
	ev := log.Debug()
	if st.State == wire.StateFailed {
		ev = log.Warn().Str("reason", st.Reason)
	}
	ev.Str("state", st.State).Msg("Delivery status from phone")
	c.report(log.WithContext(ctx), st.ID, st.State, st.Reason)
}

// DeviceState turns channel connects and disconnects into bridge states.
func (c *Connector) DeviceState(ctx context.Context, devID string, connected bool) {
	ul := c.br.GetCachedUserLoginByID(networkid.UserLoginID(devID))
	if ul == nil {
		return
	}
	if dc, ok := ul.Client.(*deviceClient); ok {
		dc.sendState(connected)
	}
}
