package sysd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
)

// SyslogIdentifier tags every journald entry rcsgate writes.
const SyslogIdentifier = "rcsgate"

// Log modes for `rcsgate serve --log`.
const (
	LogAuto     = "auto"     // journald when stderr is the journal, else JSON lines
	LogJournald = "journald" // always journald's native protocol
	LogJSON     = "json"     // always JSON lines on stderr
)

// UseJournald decides where logs go for a --log mode. "auto" picks journald
// when JOURNAL_STREAM names our stderr (device:inode of fd 2), which is how
// systemd tells a service its stderr is the journal.
func UseJournald(mode string) (bool, error) {
	switch mode {
	case LogJSON:
		return false, nil
	case LogJournald:
		if !journal.Enabled() {
			return false, fmt.Errorf("--log %s: the journald socket /run/systemd/journal/socket is not reachable", LogJournald)
		}
		return true, nil
	case LogAuto, "":
		ok, err := journal.StderrIsJournalStream()
		if err != nil {
			return false, fmt.Errorf("JOURNAL_STREAM: %w", err)
		}
		return ok, nil
	}
	return false, fmt.Errorf("--log %q: want %s, %s or %s", mode, LogAuto, LogJournald, LogJSON)
}

// JournalWriter turns zerolog's JSON lines into structured journald entries
// (see JournalFields). Put it under the redacting writer — gateway.NewLogger
// does — so masking happens before anything reaches the journal.
type JournalWriter struct {
	// Fallback gets the line as is when journald refuses it (the journal's
	// stderr stream, in practice), so no line is lost.
	Fallback io.Writer
	// Send replaces journal.Send (tests).
	Send func(message string, priority journal.Priority, fields map[string]string) error
}

func (w *JournalWriter) Write(p []byte) (int, error) {
	msg, pri, fields := JournalFields(p)
	send := w.Send
	if send == nil {
		send = journal.Send
	}
	if err := send(msg, pri, fields); err != nil && w.Fallback != nil {
		if _, err := w.Fallback.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// JournalFields maps one zerolog JSON line to a journald entry: "message"
// becomes MESSAGE, "level" PRIORITY, "time" is dropped (journald stamps
// entries itself), every other field becomes a field named in UPPER_SNAKE
// (device → DEVICE, portal_id → PORTAL_ID, eventID → EVENT_ID; nested objects
// are flattened with "_"), and SYSLOG_IDENTIFIER is "rcsgate". Names journald
// gives a meaning to (MESSAGE_ID, CODE_FILE, …) get an RCSGATE_ prefix so a
// log field cannot forge them. A line that is not JSON becomes the message.
// It sees the line after redaction and does not redact again.
func JournalFields(line []byte) (message string, priority journal.Priority, fields map[string]string) {
	line = bytes.TrimRight(line, "\r\n")
	fields = map[string]string{"SYSLOG_IDENTIFIER": SyslogIdentifier}
	priority = journal.PriInfo
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return string(line), priority, fields
	}
	for k, raw := range obj {
		switch k {
		case zerolog.MessageFieldName:
			message = jsonText(raw)
		case zerolog.LevelFieldName:
			priority = levelPriority(jsonText(raw))
		case zerolog.TimestampFieldName:
		default:
			addField(fields, FieldName(k), raw, 0)
		}
	}
	if message == "" {
		message = fields["ERROR"] // an event logged with Err and no Msg
	}
	return message, priority, fields
}

func addField(fields map[string]string, name string, raw json.RawMessage, depth int) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	if raw[0] == '{' && depth < 4 {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) == nil {
			for k, v := range obj {
				addField(fields, FieldName(name+"_"+k), v, depth+1)
			}
			return
		}
	}
	fields[name] = jsonText(raw)
}

// jsonText is a string's value, or any other JSON value's compact text.
func jsonText(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

func levelPriority(level string) journal.Priority {
	switch level {
	case zerolog.LevelTraceValue, zerolog.LevelDebugValue:
		return journal.PriDebug
	case zerolog.LevelInfoValue:
		return journal.PriInfo
	case zerolog.LevelWarnValue:
		return journal.PriWarning
	case zerolog.LevelErrorValue:
		return journal.PriErr
	case zerolog.LevelFatalValue:
		return journal.PriCrit
	case zerolog.LevelPanicValue:
		return journal.PriEmerg
	}
	return journal.PriInfo
}

// reserved are journald fields with a meaning of their own (systemd.journal-fields(7)).
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true, "CODE_LINE": true,
	"CODE_FUNC": true, "ERRNO": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true,
	"SYSLOG_FACILITY": true, "SYSLOG_IDENTIFIER": true, "SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true,
	"SYSLOG_RAW": true, "DOCUMENTATION": true, "TID": true, "UNIT": true, "USER_UNIT": true,
}

// FieldName turns a zerolog key into a valid journald field name:
// UPPER_SNAKE, only A–Z, 0–9 and "_", starting with a letter, at most 64
// characters, never one of journald's own fields.
func FieldName(key string) string {
	var b strings.Builder
	rs := []rune(key)
	under := true // suppress a leading or doubled "_"
	for i, r := range rs {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			// camelCase and ACRONYMWord boundaries: portalID → PORTAL_ID, HTTPStatus → HTTP_STATUS
			if unicode.IsUpper(r) && i > 0 && !under {
				prev := rs[i-1]
				nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
				if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
					b.WriteByte('_')
				}
			}
			b.WriteRune(unicode.ToUpper(r))
			under = false
		default:
			if !under {
				b.WriteByte('_')
				under = true
			}
		}
	}
	name := strings.TrimRight(b.String(), "_")
	switch {
	case name == "":
		name = "FIELD"
	case name[0] >= '0' && name[0] <= '9':
		name = "F_" + name
	}
	if reserved[name] || strings.HasPrefix(name, "OBJECT_") || strings.HasPrefix(name, "COREDUMP_") || strings.HasPrefix(name, "SYSLOG_") {
		name = "RCSGATE_" + name
	}
	if len(name) > 64 {
		name = strings.TrimRight(name[:64], "_")
	}
	return name
}
