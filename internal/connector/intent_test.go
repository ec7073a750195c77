package connector

import "testing"

func TestTxnIDFor(t *testing.T) {
	base := txnIDFor("ph-1", "", "m.room.message", []byte(`{"body":"hi"}`))
	if again := txnIDFor("ph-1", "", "m.room.message", []byte(`{"body":"hi"}`)); again != base {
		t.Fatal("a resend of the same message must reuse its transaction id")
	}
	for name, other := range map[string]string{
		"other message": txnIDFor("ph-2", "", "m.room.message", []byte(`{"body":"hi"}`)),
		"other part":    txnIDFor("ph-1", "1", "m.room.message", []byte(`{"body":"hi"}`)),
		"other type":    txnIDFor("ph-1", "", "m.reaction", []byte(`{"body":"hi"}`)),
		"an edit":       txnIDFor("ph-1", "", "m.room.message", []byte(`{"body":"hi!","m.new_content":{}}`)),
	} {
		if other == base {
			t.Errorf("%s shares the transaction id of the original: the homeserver would drop it", name)
		}
	}
}
