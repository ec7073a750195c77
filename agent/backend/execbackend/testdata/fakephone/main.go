// Command fakephone is a phone program for the exec backend's tests. It
// speaks the protocol of docs/backends/exec.md with nothing but the
// standard library (so it checks the spec, not our Go types): it echoes
// every send back as an inbound event from the chat, reports "delivered"
// for texts and files, keeps each event until it is acked and offers it
// again after a nack, and misbehaves on request (by the text sent):
//
//	crash    exit without answering (once: a marker file remembers)
//	hang     never answer
//	garbage  write malformed and unknown lines first
//	toolong  write a line over 1 MiB (once)
//	badevent send an event with an invalid id
//
// Chat +15550000001 fails permanently, +15550000002 transiently. Records go
// to $FAKEPHONE_DIR: starts.log, welcome.json, sends.jsonl, acks.log.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	dir   = os.Getenv("FAKEPHONE_DIR")
	outMu sync.Mutex
	out   = bufio.NewWriter(os.Stdout)

	pendMu  sync.Mutex
	pending = map[string]map[string]any{}
)

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	emitRaw(string(b))
}

func emitRaw(s string) {
	outMu.Lock()
	defer outMu.Unlock()
	out.WriteString(s + "\n")
	out.Flush()
}

func record(name, line string) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(2)
	}
	defer f.Close()
	f.WriteString(line + "\n")
}

// once reports whether marker was absent, creating it.
func once(marker string) bool {
	p := filepath.Join(dir, marker)
	if _, err := os.Stat(p); err == nil {
		return false
	}
	os.WriteFile(p, nil, 0o644)
	return true
}

func offer(ev map[string]any) {
	id, _ := ev["id"].(string)
	pendMu.Lock()
	pending[id] = ev
	pendMu.Unlock()
	emit(ev)
}

func main() {
	record("starts.log", fmt.Sprint(os.Getpid()))
	fmt.Fprintln(os.Stderr, "fakephone starting; owner number +12025550123")
	if os.Getenv("FAKEPHONE_MODE") == "nohello" {
		io.Copy(io.Discard, os.Stdin)
		return
	}
	if os.Getenv("FAKEPHONE_MODE") == "badhello" {
		emitRaw(`{"type":"event","id":"x"}`)
		io.Copy(io.Discard, os.Stdin)
		return
	}
	emit(map[string]any{"type": "hello", "protocol": 1, "name": "fakephone/1",
		"caps": map[string]any{
			"rcs":   map[string]any{"max_file_size": 104857600, "replies": true, "reactions": true, "edits": true, "deletes": true, "read_receipts": true, "delivery_reports": true, "typing": true, "groups": true},
			"sms":   map[string]any{"delivery_reports": true},
			"pager": map[string]any{},
		},
		"sims": []int{1, 2}})

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 64<<10), 2<<20)
	first := true
	for in.Scan() {
		var m map[string]any
		if err := json.Unmarshal(in.Bytes(), &m); err != nil {
			fmt.Fprintln(os.Stderr, "bad line from agent")
			os.Exit(2)
		}
		typ, _ := m["type"].(string)
		if first {
			if typ != "welcome" {
				fmt.Fprintln(os.Stderr, "first line is not welcome")
				os.Exit(2)
			}
			first = false
			record("welcome.json", in.Text())
			continue
		}
		switch typ {
		case "send":
			record("sends.jsonl", in.Text())
			send(m)
		case "typing":
			emit(map[string]any{"type": "result", "req": m["req"], "ok": true})
			emit(map[string]any{"type": "typing", "chat": m["chat"], "active": m["active"]})
		case "ack":
			id, _ := m["id"].(string)
			record("acks.log", "ack "+id)
			pendMu.Lock()
			delete(pending, id)
			pendMu.Unlock()
		case "nack":
			id, _ := m["id"].(string)
			perm, _ := m["permanent"].(bool)
			record("acks.log", fmt.Sprintf("nack %s %v", id, perm))
			pendMu.Lock()
			ev, ok := pending[id]
			if perm {
				delete(pending, id)
			}
			pendMu.Unlock()
			if ok && !perm {
				time.AfterFunc(20*time.Millisecond, func() { emit(ev) })
			}
		default:
			fmt.Fprintln(os.Stderr, "unknown type from agent:", typ)
		}
	}
}

func send(m map[string]any) {
	req := m["req"]
	id, _ := m["id"].(string)
	chat, _ := m["chat"].(string)
	text, _ := m["text"].(string)
	kind, _ := m["kind"].(string)
	ok := map[string]any{"type": "result", "req": req, "ok": true}
	switch {
	case chat == "+15550000001":
		emit(map[string]any{"type": "result", "req": req, "ok": false, "permanent": true, "reason": "invalid number"})
		return
	case chat == "+15550000002":
		emit(map[string]any{"type": "result", "req": req, "ok": false, "reason": "network down"})
		return
	case text == "crash" && once("crashed"):
		os.Exit(3)
	case text == "hang":
		return
	case text == "toolong" && once("toolong"):
		emitRaw(`{"type":"event","text":"` + strings.Repeat("x", 1<<20) + `"}`)
		return
	case text == "badevent":
		emit(ok)
		offer(map[string]any{"type": "event", "id": "bad id!", "chat": chat, "from": chat, "text": "x"})
		return
	case text == "garbage":
		for _, l := range []string{"not json", "{}", "[1,2]", `{"type":42}`, `{"type":"future","x":1}`,
			`{"type":"result","req":"nope","ok":true}`, `{"type":"hello","protocol":1}`, `{"type":"typing"}`} {
			emitRaw(l)
		}
	}
	echo := map[string]any{}
	for k, v := range m {
		echo[k] = v
	}
	delete(echo, "req")
	echo["type"] = "event"
	echo["id"] = "echo-" + id
	echo["from"] = chat
	if f, _ := m["file"].(string); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			emit(map[string]any{"type": "result", "req": req, "ok": false, "permanent": true, "reason": "file not readable"})
			return
		}
		own := filepath.Join(dir, "media-"+id)
		os.WriteFile(own, b, 0o644)
		echo["file"] = own
	}
	emit(ok)
	offer(echo)
	if kind == "" || kind == "text" || kind == "media" {
		offer(map[string]any{"type": "event", "id": "rcpt-" + id, "kind": "receipt", "chat": chat, "from": chat,
			"target": id, "state": "delivered", "transport": "rcs"})
	}
}
