package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// fixtureEpoch is the time the notification fixtures (agent/android/src/fixtures) are written at.
const fixtureEpoch = 1767225600000

// notificationFixture loads a messaging app's notification fixture with its texts tagged (so
// every run's messages are its own) and its times moved to base: the same message gets the
// same tagged text and time in every fixture, as a re-post would show it.
func notificationFixture(t *testing.T, name, tag string, base int64) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../agent/android/src/fixtures/notifications", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var n map[string]any
	if err := json.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	shift := func(v any) int64 { return base + int64(v.(float64)) - fixtureEpoch }
	n["postTime"] = shift(n["postTime"])
	extras := n["extras"].(map[string]any)
	for _, m := range extras["android.messages"].([]any) {
		msg := m.(map[string]any)
		msg["text"] = msg["text"].(string) + " " + tag
		msg["time"] = shift(msg["time"])
	}
	return n
}

// tagged returns the fixture's texts as tagged by notificationFixture.
func tagged(tag string, texts ...string) []string {
	out := make([]string, len(texts))
	for i, s := range texts {
		out[i] = s + " " + tag
	}
	return out
}

// anyMessage matches an m.room.message in room (any if empty) with body, from anyone.
func anyMessage(room id.RoomID, body string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.EventMessage || (room != "" && e.RoomID != room) {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsMessage().Body == body
	}
}

// failedWith matches a failed send status for evtID whose message says why.
func failedWith(room id.RoomID, evtID id.EventID, why string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if !statusOf(room, evtID, event.MessageStatusFail)(e) {
			return false
		}
		mss := e.Content.Parsed.(*event.BeeperMessageStatusEventContent)
		return strings.Contains(mss.Message+" "+mss.InternalError+" "+mss.Error, why)
	}
}

func reportIs(ev string, fields map[string]any) func(map[string]any) bool {
	return func(m map[string]any) bool {
		if m["ev"] != ev {
			return false
		}
		for k, v := range fields {
			if m[k] != v {
				return false
			}
		}
		return true
	}
}

// TestAndroidAppRCS: the RCS path through the messaging app, with the app's real Java side
// and the real agent against rcsgate and a homeserver, the messaging app faked (notifications
// posted from the fixtures, a fixture compose screen). A posted notification becomes exactly
// one Matrix message per message, in the right portal (a group in a group portal), across
// re-posts; a Matrix reply fires the notification's reply action with the text; a Matrix read
// fires mark-as-read; a Matrix message to a new number drives the compose screen and shows as
// sent, and as failed with the reason when the Send button is missing; a chat known by name only
// whose notification is gone fails with the reason.
func TestAndroidAppRCS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, cli, mgmt := upWith(t, ctx, harness.Options{NoAgent: true})
	app := startPhoneAppWith(t, ctx, st, harness.PhoneAppOptions{RCS: true})
	app.wait(ctx, "connected status from the agent", 0, harness.Connected)
	tag := nonce(t)
	base := time.Now().Add(-time.Minute).UnixMilli()

	t.Log("step: a 1:1 notification (a contact by name only) becomes one Matrix message per message")
	one := tagged(tag, "Hi! Long time no see", "Are you coming tonight?", "Yes, with Bob", "Great, see you at 8")
	from := cli.Now()
	at := app.Len()
	app.cmd(map[string]any{"cmd": "post", "notification": notificationFixture(t, "google-1to1", tag, base)})
	posted, _ := app.wait(ctx, "the 1:1 notification read", at, reportIs("posted", nil))
	if chat, _ := posted["chat"].(string); !strings.HasPrefix(chat, "c:") || posted["messages"] != float64(2) {
		t.Fatalf("posted: %v", posted)
	}
	first, cur, err := cli.WaitEvent(ctx, from, anyMessage("", one[0]))
	if err != nil {
		t.Fatalf("the notification's first message did not reach Matrix: %v", err)
	}
	portal, ghost := first.RoomID, first.Sender
	if _, _, err := cli.WaitEvent(ctx, cur, cli.Message(portal, ghost, one[1])); err != nil {
		t.Fatalf("the second message did not follow in the same portal: %v", err)
	}

	t.Log("step: re-posted with its history, the owner's own reply and a new message: only the new ones come")
	from = cli.Now()
	app.cmd(map[string]any{"cmd": "post", "notification": notificationFixture(t, "google-1to1-update", tag, base)})
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, one[3])); err != nil {
		t.Fatalf("the new message of the re-post did not reach Matrix: %v", err)
	}
	mine, _, err := cli.WaitEvent(ctx, from, anyMessage(portal, one[2]))
	if err != nil {
		t.Fatalf("the owner's message typed on the phone did not reach Matrix: %v", err)
	}
	if mine.Sender == ghost {
		t.Errorf("the owner's message shows as the contact's")
	}

	t.Log("step: a group notification goes to a group portal of its own")
	group := tagged(tag, "Dinner on Sunday?", "I'll bring dessert", "Count me in")
	from = cli.Now()
	app.cmd(map[string]any{"cmd": "post", "notification": notificationFixture(t, "google-group", tag, base)})
	var groupRoom id.RoomID
	senders := map[id.UserID]bool{}
	for _, body := range group {
		e, _, err := cli.WaitEvent(ctx, from, anyMessage(groupRoom, body))
		if err != nil {
			t.Fatalf("group message %q did not reach Matrix: %v", body, err)
		}
		groupRoom = e.RoomID
		senders[e.Sender] = true
	}
	if groupRoom == portal || len(senders) != 3 || senders[ghost] {
		t.Fatalf("group messages: room %s (1:1 portal %s), senders %v", groupRoom, portal, senders)
	}
	if _, _, err := cli.WaitEvent(ctx, 0, func(e *event.Event) bool {
		if e.Type != event.StateRoomName || e.RoomID != groupRoom {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsRoomName().Name == "Family"
	}); err != nil {
		t.Fatalf("the group portal is not named after the group: %v", err)
	}

	t.Log("step: a Matrix reply fires the conversation's cached reply action with the text")
	reply := "matrix reply " + tag
	from = cli.Now()
	resp, err := cli.SendText(ctx, portal, reply)
	if err != nil {
		t.Fatal(err)
	}
	fired, _ := app.wait(ctx, "the reply action", 0, reportIs("reply", map[string]any{"text": reply}))
	if fired["key"] != "0|com.google.android.apps.messaging|41|null|10150" {
		t.Fatalf("the reply went to notification %v", fired["key"])
	}
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(portal, resp.EventID, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("no success status for the reply: %v", err)
	}
	groupReply := "to the family " + tag
	if _, err := cli.SendText(ctx, groupRoom, groupReply); err != nil {
		t.Fatal(err)
	}
	fired, _ = app.wait(ctx, "the group's reply action", 0, reportIs("reply", map[string]any{"text": groupReply}))
	if fired["key"] != "0|com.google.android.apps.messaging|63|null|10150" {
		t.Fatalf("the group reply went to notification %v", fired["key"])
	}

	t.Log("step: reading in Matrix marks the conversation read on the phone")
	at = app.Len()
	if err := cli.MarkRead(ctx, portal, first.ID); err != nil {
		t.Fatal(err)
	}
	app.wait(ctx, "the mark-as-read action", at, reportIs("markread", map[string]any{"key": "0|com.google.android.apps.messaging|41|null|10150"}))

	t.Log("step: a Matrix message to a new number drives the compose screen and shows as sent")
	const number = "+12025550155"
	newPortal, _, err := cli.StartChat(ctx, mgmt, number)
	if err != nil {
		t.Fatal(err)
	}
	composed := "new chat " + tag
	from = cli.Now()
	resp, err = cli.SendText(ctx, newPortal, composed)
	if err != nil {
		t.Fatal(err)
	}
	app.wait(ctx, "the compose screen opened", 0, reportIs("compose-open", map[string]any{"number": number}))
	app.wait(ctx, "Send pressed on the compose screen", 0, reportIs("compose-sent", map[string]any{"number": number, "text": composed}))
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(newPortal, resp.EventID, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("no success status after the compose screen sent it: %v", err)
	}

	t.Log("step: without a Send button the message fails in Matrix with the reason, and nothing is sent")
	at = app.Len()
	app.cmd(map[string]any{"cmd": "ui", "screen": "google-no-send"})
	app.wait(ctx, "the new screen", at, reportIs("ui", nil))
	unsent := "no button " + tag
	from = cli.Now()
	resp, err = cli.SendText(ctx, newPortal, unsent)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, failedWith(newPortal, resp.EventID, "could not find the Send button")); err != nil {
		t.Fatalf("no failure with the reason: %v", err)
	}
	if n := app.Count(reportIs("compose-sent", map[string]any{"text": unsent})); n != 0 {
		t.Errorf("sent %d times without a Send button", n)
	}

	t.Log("step: a chat known by name only, its notification gone: fails with the reason")
	app.cmd(map[string]any{"cmd": "remove", "key": "0|com.google.android.apps.messaging|41|null|10150"})
	late := "too late " + tag
	from = cli.Now()
	resp, err = cli.SendText(ctx, portal, late)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, failedWith(portal, resp.EventID, "notification for this chat is gone")); err != nil {
		t.Fatalf("no failure with the reason: %v", err)
	}

	t.Log("check: every notification message reached Matrix exactly once; the reply was not bridged back")
	count := map[string]int{}
	for _, e := range cli.Events() {
		if e.Type == event.EventMessage {
			_ = e.Content.ParseRaw(e.Type)
			count[e.Content.AsMessage().Body]++
		}
	}
	for _, body := range append(append([]string{}, one...), group...) {
		if count[body] != 1 {
			t.Errorf("%q reached Matrix %d times, want once", body, count[body])
		}
	}
	if count[reply] != 1 {
		t.Errorf("the Matrix reply shows %d times, want once (it must not come back from the phone)", count[reply])
	}
	if n := app.Count(reportIs("reply", map[string]any{"text": reply})); n != 1 {
		t.Errorf("the reply action fired %d times, want once", n)
	}
	// The agent's log (kept by the app) holds no message text, no name and no number.
	logb, err := os.ReadFile(filepath.Join(app.Dir, "agent.log"))
	if err != nil || len(logb) == 0 {
		t.Fatalf("no agent log in the app's files: %v", err)
	}
	for _, secret := range []string{one[0], group[1], reply, composed, "Ann Example", "2025550155", "2079460018"} {
		if strings.Contains(string(logb), secret) {
			t.Errorf("the agent's log holds %q", secret)
		}
	}
}
