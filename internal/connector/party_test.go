package connector

import (
	"context"
	"testing"
)

// TestParty: the keys the bridge uses for what the phone names as a chat or a sender.
func TestParty(t *testing.T) {
	c := &Connector{cfg: Config{DefaultRegion: "US"}}
	tests := []struct{ in, want string }{
		{"+1 202-555-0100", "+12025550100"},
		{"(202) 555-0100", "+12025550100"}, // the default region
		{"g:9", "g:9"},
		{"c:3f2a9c0d41b7e8aa", "c:3f2a9c0d41b7e8aa"}, // a party the phone knows by name only
		{"Mom", ""},
		{"c", ""},
	}
	for _, tc := range tests {
		got, err := c.party(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("party(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("party(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestUserInfoOfConversationKey: a ghost known by a conversation key has no number to show,
// even with show_numbers on; it is told apart by the key's tail.
func TestUserInfoOfConversationKey(t *testing.T) {
	for _, show := range []bool{false, true} {
		c := &Connector{cfg: Config{ShowNumbers: show}}
		info, err := c.userInfo(context.Background(), "opaque", "c:3f2a9c0d41b7e8aa")
		if err != nil {
			t.Fatal(err)
		}
		if *info.Name != "Phone contact e8aa" || len(info.Identifiers) != 0 {
			t.Errorf("show_numbers=%v: name %q, identifiers %v", show, *info.Name, info.Identifiers)
		}
	}
	c := &Connector{}
	if info, _ := c.userInfo(context.Background(), "opaque", "c:k"); *info.Name != "Phone contact k" {
		t.Errorf("short key: name %q", *info.Name)
	}
}
