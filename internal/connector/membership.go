package connector

import (
	"context"
	"errors"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/event"
)

var _ bridgev2.MembershipHandlingNetworkAPI = (*deviceClient)(nil)

// Membership changes a phone chat cannot follow; each says what does happen.
// (Inviting another Matrix user fails in bridgev2 before it gets here;
// inviteNotice explains that one.)
var (
	errInviteNotBridged = bridgev2.WrapErrorInStatus(errors.New(
		"adding a contact to this room does not add them to the conversation on the phone; start a group from the phone")).
		WithIsCertain(true).WithErrorAsMessage().WithSendNotice(true)
	errKickNotBridged = bridgev2.WrapErrorInStatus(errors.New(
		"removing someone from this room does not block or remove them on the phone")).
		WithIsCertain(true).WithErrorAsMessage().WithSendNotice(true)
)

// HandleMatrixMembership: the owner joining or leaving a portal is theirs
// to do and needs nothing from the phone (bridgev2 would otherwise answer
// the owner's own join with a failure status). Inviting or removing others
// cannot reach the phone: the answer says so in a notice.
func (d *deviceClient) HandleMatrixMembership(ctx context.Context, msg *bridgev2.MatrixMembershipChange) (*bridgev2.MatrixMembershipResult, error) {
	if msg.Type.IsSelf {
		return nil, nil
	}
	switch msg.Type.To {
	case event.MembershipInvite, event.MembershipJoin:
		return nil, errInviteNotBridged
	case event.MembershipLeave, event.MembershipBan:
		return nil, errKickNotBridged
	}
	return nil, nil
}
