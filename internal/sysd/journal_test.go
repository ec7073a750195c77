package sysd_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/sysd"
)

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"device":       "DEVICE",
		"portal_id":    "PORTAL_ID",
		"event_id":     "EVENT_ID",
		"msg_id":       "MSG_ID",
		"eventID":      "EVENT_ID",
		"HTTPStatus":   "HTTP_STATUS",
		"rtt_ms":       "RTT_MS",
		"db_section":   "DB_SECTION",
		"mx.room-id":   "MX_ROOM_ID",
		"_private":     "PRIVATE",
		"3pid":         "F_3PID",
		"":             "FIELD",
		"__":           "FIELD",
		"message_id":   "RCSGATE_MESSAGE_ID", // journald's own catalogue id
		"priority":     "RCSGATE_PRIORITY",
		"code_file":    "RCSGATE_CODE_FILE",
		"syslog_ident": "RCSGATE_SYSLOG_IDENT",
		"zählung":      "Z_HLUNG",
		"a_very_long_field_name_that_goes_on_and_on_and_on_beyond_sixty_four": "A_VERY_LONG_FIELD_NAME_THAT_GOES_ON_AND_ON_AND_ON_BEYOND_SIXTY_F",
	} {
		if got := sysd.FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

// Whatever the key, the name is one journald accepts (sd_journal_send(3),
// journal_field_valid): A–Z, 0–9, "_", not starting with "_" or a digit,
// at most 64 bytes.
func TestFieldNameAlwaysValid(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)
	for _, k := range []string{"a", "_", "9", "é", "日本", "a b\tc\n", "__x__", "X-Y.Z", strings.Repeat("ab", 80),
		strings.Repeat("_9", 40), "aB1cD2", "ALLCAPS", "mIxEd_Case-Key", "\x00\xff", "$event", "@user:server"} {
		if got := sysd.FieldName(k); !valid.MatchString(got) {
			t.Errorf("FieldName(%q) = %q: not a valid journald field name", k, got)
		}
	}
}

func TestJournalFields(t *testing.T) {
	line := `{"level":"warn","component":"devicechan","device":"ABCDEFG-HIJKLMN","portal_id":"rcs_1a2b","event_id":"$ev:localhost","msg_id":"m1","rtt_ms":12.5,"ok":true,"gone":null,"req":{"method":"PUT","path":"/x"},"ids":["a","b"],"error":"timeout: no recent network activity","time":"2026-01-01T00:00:00Z","message":"Device connection lost"}` + "\n"
	msg, pri, f := sysd.JournalFields([]byte(line))
	if msg != "Device connection lost" || pri != journal.PriWarning {
		t.Fatalf("message %q priority %d", msg, pri)
	}
	want := map[string]string{
		"SYSLOG_IDENTIFIER": "rcsgate",
		"COMPONENT":         "devicechan",
		"DEVICE":            "ABCDEFG-HIJKLMN",
		"PORTAL_ID":         "rcs_1a2b",
		"EVENT_ID":          "$ev:localhost",
		"MSG_ID":            "m1",
		"RTT_MS":            "12.5",
		"OK":                "true",
		"REQ_METHOD":        "PUT",
		"REQ_PATH":          "/x",
		"IDS":               `["a","b"]`,
		"ERROR":             "timeout: no recent network activity",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	for _, k := range []string{"TIME", "LEVEL", "MESSAGE", "PRIORITY", "GONE", "REQ"} {
		if _, ok := f[k]; ok {
			t.Errorf("unexpected field %s=%q", k, f[k])
		}
	}
	if len(f) != len(want) {
		t.Errorf("fields %v", f)
	}

	for level, want := range map[string]journal.Priority{
		"trace": journal.PriDebug, "debug": journal.PriDebug, "info": journal.PriInfo, "warn": journal.PriWarning,
		"error": journal.PriErr, "fatal": journal.PriCrit, "panic": journal.PriEmerg, "": journal.PriInfo,
	} {
		if _, got, _ := sysd.JournalFields([]byte(`{"level":"` + level + `","message":"m"}`)); got != want {
			t.Errorf("level %q: priority %d, want %d", level, got, want)
		}
	}
	// Err without Msg: the error is the message. Not JSON: the line is.
	if msg, _, _ := sysd.JournalFields([]byte(`{"level":"error","error":"boom"}`)); msg != "boom" {
		t.Errorf("error-only event: message %q", msg)
	}
	if msg, pri, f := sysd.JournalFields([]byte("panic: oops\n")); msg != "panic: oops" || pri != journal.PriInfo || f["SYSLOG_IDENTIFIER"] != "rcsgate" {
		t.Errorf("plain line: %q %d %v", msg, pri, f)
	}
}

type sent struct {
	msg    string
	pri    journal.Priority
	fields map[string]string
}

// The production wiring (cmdServe): gateway.NewLogger over a JournalWriter,
// so redaction runs before anything reaches journald.
func TestJournalLoggerRedacts(t *testing.T) {
	var mu sync.Mutex
	var got []sent
	w := &sysd.JournalWriter{Send: func(m string, p journal.Priority, f map[string]string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, sent{m, p, f})
		return nil
	}}
	log, err := gateway.NewLogger(w, "debug")
	if err != nil {
		t.Fatal(err)
	}
	const number, token = "+12025550100", "abcdefghijklmnopqrstuvwxyz012345"
	link := "rcsgate://pair?addr=127.0.0.1%3A4443&token=" + token + "&pin=x"
	log.Info().Str("device", "DEV1").Str("contact", number).Str("link", link).
		Str("ghost", "@rcs_=2b4915112345678:localhost").Msg("Started chat with " + number)
	log.Error().Str("portal_id", "p1").Msg("Delivery failed")

	if len(got) != 2 {
		t.Fatalf("%d entries sent", len(got))
	}
	e := got[0]
	var all strings.Builder
	all.WriteString(e.msg)
	for k, v := range e.fields {
		all.WriteString(" " + k + "=" + v)
	}
	for _, leak := range []string{"12025550100", "4915112345678", token[:16]} {
		if strings.Contains(all.String(), leak) {
			t.Fatalf("%q reached journald: %s", leak, all.String())
		}
	}
	if e.msg != "Started chat with +1…00" || e.fields["CONTACT"] != "+1…00" || e.fields["DEVICE"] != "DEV1" ||
		!strings.Contains(e.fields["LINK"], "token=…") || e.pri != journal.PriInfo {
		t.Fatalf("entry %+v", e)
	}
	if got[1].pri != journal.PriErr || got[1].msg != "Delivery failed" || got[1].fields["PORTAL_ID"] != "p1" {
		t.Fatalf("entry %+v", got[1])
	}
}

// When journald refuses an entry the (redacted) JSON line goes to the fallback.
func TestJournalWriterFallback(t *testing.T) {
	var fb strings.Builder
	w := &sysd.JournalWriter{Fallback: &fb, Send: func(string, journal.Priority, map[string]string) error {
		return errors.New("journald gone")
	}}
	log, err := gateway.NewLogger(w, "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("contact", "+12025550100").Msg("hello")
	if out := fb.String(); !strings.Contains(out, `"message":"hello"`) || strings.Contains(out, "12025550100") {
		t.Fatalf("fallback got %q", out)
	}
}

func TestUseJournald(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	if ok, err := sysd.UseJournald("auto"); ok || err != nil {
		t.Fatalf("auto without JOURNAL_STREAM: %v %v", ok, err)
	}
	t.Setenv("JOURNAL_STREAM", "1:2") // some other stream, not our stderr
	if ok, err := sysd.UseJournald("auto"); ok || err != nil {
		t.Fatalf("auto with a foreign JOURNAL_STREAM: %v %v", ok, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino)) // as systemd sets it for StandardError=journal
	if ok, err := sysd.UseJournald("auto"); !ok || err != nil {
		t.Fatalf("auto with JOURNAL_STREAM naming stderr: %v %v", ok, err)
	}
	if ok, err := sysd.UseJournald("json"); ok || err != nil {
		t.Fatalf("json: %v %v", ok, err)
	}
	if _, err := sysd.UseJournald("syslog"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}
