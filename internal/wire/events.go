package wire

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// Kinds of Message. The zero value is a text message, so protocol-1 peers
// that never set Kind keep working.
const (
	KindText     = "text"     // Text; ReplyTo optional
	KindMedia    = "media"    // Media (bytes on a stream of their own, see MediaGet); Text is the caption
	KindReaction = "reaction" // Emoji on Target
	KindUnreact  = "unreact"  // removes Emoji (the sender's) from Target
	KindEdit     = "edit"     // Text replaces Target's text
	KindDelete   = "delete"   // unsend / delete Target
	KindReceipt  = "receipt"  // phone → server: State (delivered|read|failed, Reason) of Target, a message sent from Matrix
	KindRead     = "read"     // the reader has read Chat up to and including Target
	KindGroup    = "group"    // Group describes the chat now (name, members); Text optional system note
	KindContact  = "contact"  // Contact: name (and avatar) the phone has for From
)

// Transports a phone can use for a chat.
const (
	TransportRCS = "rcs"
	TransportSMS = "sms"
	TransportMMS = "mms"
)

// Limits beyond the ones in messages.go.
const (
	MaxEmojiLen     = 64
	MaxMembers      = 256
	MaxNameLen      = 256
	MaxMediaSize    = 100 << 20 // the largest RCS file transfer carriers allow in practice
	MaxMediaName    = 255
	MaxMimeLen      = 127
	GroupChatPrefix = "g:" // group chat ids start with it; 1:1 chats are E.164 numbers
	// ConversationPrefix starts the id of a party the phone knows only as a
	// conversation, not by number (a messaging app's notification that names
	// the sender but carries no number): "c:<key>", key chosen by the phone,
	// stable per conversation (or per group member). As Chat it is a 1:1
	// chat, as From or a group member's Number a sender; either way the
	// bridge keys the ghost (and the 1:1 portal) by it, so replies reach the
	// right conversation on the phone.
	ConversationPrefix = "c:"
	// MaxConversationKey bounds the key after the prefix (Chat's limit).
	MaxConversationKey = MaxChatLen - len(ConversationPrefix)
)

// Media describes a file. The bytes are never in a frame: the receiver of the
// Message pulls them with MediaGet on a stream of their own, so a large file
// never delays text and neither side holds it in memory.
type Media struct {
	Name       string `json:"name,omitempty"`
	Mime       string `json:"mime"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256,omitempty"` // hex; checked by the receiver when set
	Width      int    `json:"w,omitempty"`
	Height     int    `json:"h,omitempty"`
	DurationMS int    `json:"duration_ms,omitempty"`
	Voice      bool   `json:"voice,omitempty"` // a voice note (audio)
}

// Group describes a group chat.
type Group struct {
	Name    string   `json:"name,omitempty"`
	Topic   string   `json:"topic,omitempty"`
	Members []Member `json:"members"` // everyone but the phone's owner
}

// Member is one participant of a group chat.
type Member struct {
	Number string `json:"number"`
	Name   string `json:"name,omitempty"` // as the phone's contacts know them; may be empty
}

// Contact is what the phone's address book says about From.
type Contact struct {
	Name string `json:"name,omitempty"`
	// AvatarSHA256, when set, says the avatar (Media-like bytes fetched with
	// MediaGet for this message's id) changed.
	AvatarMime string `json:"avatar_mime,omitempty"`
	AvatarSize int64  `json:"avatar_size,omitempty"`
}

// MediaGet asks the peer for the bytes of a message's media (or a contact's
// avatar). It is the first frame on a stream the asker opens; the answer is a
// MediaHeader followed by exactly Size raw bytes, or an Error, and then the
// stream ends.
type MediaGet struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset,omitempty"` // resume a cut transfer
}

// MediaHeader precedes the raw bytes of a MediaGet answer.
type MediaHeader struct {
	ID    string `json:"id"`
	Size  int64  `json:"size"`  // bytes that follow (total - offset)
	Total int64  `json:"total"` // the whole file
	// SHA256 of the whole file, hex; empty when the sender streams bytes it
	// has not seen yet (see FeatureMediaTrailer): a MediaTrailer follows.
	SHA256 string `json:"sha256"`
}

// MediaTrailer follows the raw bytes of a media stream whose header carried
// no hash: the hash of the whole file, which the sender computed while
// sending and checked against its own source.
type MediaTrailer struct {
	SHA256 string `json:"sha256"`
}

// Typing is ephemeral: never journaled, never acked, dropped when offline.
type Typing struct {
	Chat   string `json:"chat"`
	Active bool   `json:"active"`
}

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	mimeRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*/[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*$`)
)

// IsGroupChat reports whether chat names a group rather than a number.
func IsGroupChat(chat string) bool {
	return len(chat) > len(GroupChatPrefix) && chat[:len(GroupChatPrefix)] == GroupChatPrefix
}

// IsConversationChat reports whether chat (or a sender) is a conversation
// key ("c:<key>") rather than a number or a group; it does not check the key
// (Validate does).
func IsConversationChat(chat string) bool {
	return len(chat) > len(ConversationPrefix) && chat[:len(ConversationPrefix)] == ConversationPrefix
}

// validParty checks the conversation-key form of a chat, sender or group
// member: 1 to MaxConversationKey characters of [A-Za-z0-9._-] after "c:".
// Numbers and group ids are checked by the bridge, which normalises them.
func validParty(what, s string) error {
	if len(s) < len(ConversationPrefix) || s[:len(ConversationPrefix)] != ConversationPrefix {
		return nil
	}
	key := s[len(ConversationPrefix):]
	if key == "" || len(key) > MaxConversationKey {
		return fmt.Errorf("%w: %s conversation key length %d", ErrMalformed, what, len(key))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s conversation key has %q", ErrMalformed, what, c)
		}
	}
	return nil
}

// TextKind reports whether the message carries text to show (text, edit or
// a media caption).
func (m Message) TextKind() bool { return m.Kind == "" || m.Kind == KindText || m.Kind == KindEdit }

func validText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s of %d bytes", ErrMalformed, what, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, what)
	}
	return nil
}

func validRef(what, id string) error {
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %s id length %d", ErrMalformed, what, len(id))
	}
	return nil
}

// validateEvent checks the fields beyond the text message's.
func (m Message) validateEvent() error {
	if err := validParty("chat", m.Chat); err != nil {
		return err
	}
	if err := validParty("sender", m.From); err != nil {
		return err
	}
	if err := validRef("reply", m.ReplyTo); err != nil {
		return err
	}
	if err := validRef("target", m.Target); err != nil {
		return err
	}
	if err := validText("reason", m.Reason, MaxReasonLen); err != nil {
		return err
	}
	if len(m.Kind) > MaxTokenLen || len(m.State) > MaxTokenLen {
		return fmt.Errorf("%w: kind or state of %d/%d bytes", ErrMalformed, len(m.Kind), len(m.State))
	}
	switch m.Transport {
	case "", TransportRCS, TransportSMS, TransportMMS:
	default:
		return fmt.Errorf("%w: unknown transport %q", ErrMalformed, clip(m.Transport))
	}
	if m.SIM < 0 || m.SIM > MaxSIMs {
		return fmt.Errorf("%w: SIM slot %d", ErrMalformed, m.SIM)
	}
	needTarget := false
	switch m.Kind {
	case "", KindText:
	case KindMedia:
		if m.Media == nil {
			return fmt.Errorf("%w: media message without media", ErrMalformed)
		}
	case KindReaction, KindUnreact:
		needTarget = true
		if m.Emoji == "" {
			return fmt.Errorf("%w: reaction without emoji", ErrMalformed)
		}
	case KindEdit, KindDelete, KindRead:
		needTarget = true
	case KindReceipt:
		needTarget = true
		switch m.State {
		case StateDelivered, StateRead, StateFailed:
		default:
			return fmt.Errorf("%w: receipt state %q", ErrMalformed, clip(m.State))
		}
	case KindGroup:
		if m.Group == nil {
			return fmt.Errorf("%w: group message without group", ErrMalformed)
		}
	case KindContact:
		if m.Contact == nil {
			return fmt.Errorf("%w: contact message without contact", ErrMalformed)
		}
	default:
		// A newer peer's kind: valid on the wire; receivers ack and skip it.
	}
	if needTarget && m.Target == "" {
		return fmt.Errorf("%w: %s without target", ErrMalformed, m.Kind)
	}
	if err := validText("emoji", m.Emoji, MaxEmojiLen); err != nil {
		return err
	}
	if m.Media != nil {
		if err := m.Media.Validate(); err != nil {
			return err
		}
	}
	if m.Group != nil {
		if err := m.Group.Validate(); err != nil {
			return err
		}
	}
	if m.Contact != nil {
		if err := validText("contact name", m.Contact.Name, MaxNameLen); err != nil {
			return err
		}
		if m.Contact.AvatarSize < 0 || m.Contact.AvatarSize > MaxMediaSize {
			return fmt.Errorf("%w: avatar size %d", ErrMalformed, m.Contact.AvatarSize)
		}
		if mime := m.Contact.AvatarMime; mime != "" && (len(mime) > MaxMimeLen || !mimeRE.MatchString(mime)) {
			return fmt.Errorf("%w: avatar type %q", ErrMalformed, clip(mime))
		}
	}
	return nil
}

// KnownKind reports whether this build understands the message's kind.
func (m Message) KnownKind() bool {
	switch m.Kind {
	case "", KindText, KindMedia, KindReaction, KindUnreact, KindEdit, KindDelete, KindReceipt, KindRead, KindGroup, KindContact:
		return true
	}
	return false
}

func (md Media) Validate() error {
	switch {
	case md.Size < 0 || md.Size > MaxMediaSize:
		return fmt.Errorf("%w: media size %d", ErrMalformed, md.Size)
	case len(md.Mime) > MaxMimeLen || !mimeRE.MatchString(md.Mime):
		return fmt.Errorf("%w: media type %q", ErrMalformed, clip(md.Mime))
	case md.SHA256 != "" && !hexSHA256.MatchString(md.SHA256):
		return fmt.Errorf("%w: media hash is not hex SHA-256", ErrMalformed)
	case md.Width < 0 || md.Height < 0 || md.DurationMS < 0:
		return fmt.Errorf("%w: negative media dimension", ErrMalformed)
	}
	return validText("media name", md.Name, MaxMediaName)
}

func (g Group) Validate() error {
	if len(g.Members) > MaxMembers {
		return fmt.Errorf("%w: %d group members", ErrMalformed, len(g.Members))
	}
	if err := validText("group name", g.Name, MaxNameLen); err != nil {
		return err
	}
	if err := validText("group topic", g.Topic, MaxTextLen); err != nil {
		return err
	}
	for _, mem := range g.Members {
		if mem.Number == "" || len(mem.Number) > MaxChatLen {
			return fmt.Errorf("%w: group member number length %d", ErrMalformed, len(mem.Number))
		}
		if err := validParty("group member", mem.Number); err != nil {
			return err
		}
		if err := validText("member name", mem.Name, MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}

func (MediaGet) FrameType() Type     { return TypeMediaGet }
func (MediaHeader) FrameType() Type  { return TypeMediaHeader }
func (MediaTrailer) FrameType() Type { return TypeMediaTrailer }
func (Typing) FrameType() Type       { return TypeTyping }

func (g MediaGet) Validate() error {
	if g.ID == "" || len(g.ID) > MaxIDLen || g.Offset < 0 || g.Offset > MaxMediaSize {
		return fmt.Errorf("%w: media request", ErrMalformed)
	}
	return nil
}
func (h MediaHeader) Validate() error {
	switch {
	case h.ID == "" || len(h.ID) > MaxIDLen:
		return fmt.Errorf("%w: media header id", ErrMalformed)
	case h.Total < 0 || h.Total > MaxMediaSize || h.Size < 0 || h.Size > h.Total:
		return fmt.Errorf("%w: media header sizes %d/%d", ErrMalformed, h.Size, h.Total)
	case h.SHA256 != "" && !hexSHA256.MatchString(h.SHA256):
		return fmt.Errorf("%w: media header hash", ErrMalformed)
	}
	return nil
}
func (t MediaTrailer) Validate() error {
	if !hexSHA256.MatchString(t.SHA256) {
		return fmt.Errorf("%w: media trailer hash", ErrMalformed)
	}
	return nil
}
func (t Typing) Validate() error {
	if t.Chat == "" || len(t.Chat) > MaxChatLen {
		return fmt.Errorf("%w: typing chat length %d", ErrMalformed, len(t.Chat))
	}
	return nil
}

// Caps is what a chat can carry over one transport; the agent announces one
// per transport in Hello so the bridge shows Matrix users what will work.
type Caps struct {
	MaxFileSize     int64 `json:"max_file_size,omitempty"` // 0: no media
	Replies         bool  `json:"replies,omitempty"`
	Reactions       bool  `json:"reactions,omitempty"`
	Edits           bool  `json:"edits,omitempty"`
	Deletes         bool  `json:"deletes,omitempty"`
	ReadReceipts    bool  `json:"read_receipts,omitempty"`
	DeliveryReports bool  `json:"delivery_reports,omitempty"`
	Typing          bool  `json:"typing,omitempty"`
	Groups          bool  `json:"groups,omitempty"`
}
