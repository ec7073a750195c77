package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/pki"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb lockedBuffer
	code := run(t.Context(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndErrors(t *testing.T) {
	empty := t.TempDir()
	tests := []struct {
		args []string
		code int
		in   string // expected in stderr (or stdout for code 0)
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"-h"}, 0, "rcsgate-agent pair"},
		{[]string{"pair", "-h"}, 0, "LINK"},
		{[]string{"run", "-h"}, 0, "--control"},
		{[]string{"sim", "inject", "-h"}, 0, "--from"},
		{[]string{"pair"}, 2, "want exactly one pairing link"},
		{[]string{"pair", "--nope", "x"}, 2, "flag provided but not defined"},
		{[]string{"pair", "--state", empty, "rcsgate://pair?token=x"}, 1, "invalid pairing link"},
		{[]string{"id", "--state", empty}, 1, "not paired yet"},
		{[]string{"run", "--state", empty}, 1, "not paired yet"},
		{[]string{"run", "--state", empty, "--backend", "android"}, 2, "unknown backend"},
		{[]string{"sim"}, 2, "sim inject"},
		{[]string{"sim", "inject", "--state", empty}, 2, "--from and --text are required"},
		{[]string{"sim", "inject", "--state", empty, "--from", "+15551234567", "--text", "x"}, 1, "is `rcsgate-agent run` running"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, tc.in) {
				t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", tc.in, stdout, stderr)
			}
			if code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("error is not one line: %q", stderr)
			}
		})
	}
}

// fakeIdentity writes what pairing would have written, for a server that
// isn't there: enough for `run` to start and keep retrying.
func fakeIdentity(t *testing.T, dir string) pki.DeviceID {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	der, id, err := ca.SignCSR(csr, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyPair(filepath.Join(dir, agent.CertFile), filepath.Join(dir, agent.KeyFile), der, key); err != nil {
		t.Fatal(err)
	}
	pin := make([]byte, 32)
	si, _ := json.Marshal(agent.ServerInfo{Addrs: []string{"127.0.0.1:9"}, Pin: base64.RawURLEncoding.EncodeToString(pin)})
	if err := os.WriteFile(filepath.Join(dir, agent.ServerFile), si, 0o600); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRunAndInject(t *testing.T) {
	dir := t.TempDir()
	id := fakeIdentity(t, dir)

	if code, out, errOut := runCLI(t, "id", "--state", dir); code != 0 || strings.TrimSpace(out) != id.String() {
		t.Fatalf("id: %d %q %q", code, out, errOut)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "--state", dir, "--control", "127.0.0.1:0"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	}()

	addrFile := filepath.Join(dir, agent.ControlAddrFile)
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" {
		if b, err := os.ReadFile(addrFile); err == nil {
			addr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatalf("no %s; stderr:\n%s", agent.ControlAddrFile, stderr.String())
		} else {
			time.Sleep(5 * time.Millisecond) // polling for the file, not synchronising
		}
	}

	if code, out, errOut := runCLI(t, "sim", "inject", "--state", dir, "--from", "+15551234567", "--text", "secret body"); code != 0 {
		t.Fatalf("inject: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "sim", "inject", "--state", dir, "--control", addr, "--from", "nope", "--text", "x"); code != 1 || !strings.Contains(errOut, "from must be") {
		t.Fatalf("bad inject: %d %q", code, errOut)
	}
	// Without the state directory's token, the API refuses.
	if code, _, errOut := runCLI(t, "sim", "inject", "--state", t.TempDir(), "--control", addr, "--from", "+15551234567", "--text", "x"); code != 1 || !strings.Contains(errOut, "token") {
		t.Fatalf("inject without the token: %d %q", code, errOut)
	}
	if resp, err := http.Get("http://" + addr + "/v1/healthz"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("healthz without the token: %v %v", resp, err)
	}

	token, err := sim.ReadControlToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/healthz", nil)
	sim.Authorize(req, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var h sim.Health
	_ = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h.Connected {
		t.Fatal("connected to a server that does not exist")
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited %d on cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Fatalf("%s left behind", agent.ControlAddrFile)
	}
	logs := stderr.String()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %q", line)
		}
	}
	if strings.Contains(logs, "secret body") || strings.Contains(logs, "+15551234567") {
		t.Fatalf("logs leak a body or number:\n%s", logs)
	}
	if !strings.Contains(logs, id.Short()) {
		t.Fatalf("logs do not name the device:\n%s", logs)
	}
}

// TestRunStdio runs the agent as the phone app does: the protocol on its
// stdin and stdout, nothing else on stdout, and it stops when the app
// closes its stdin.
func TestRunStdio(t *testing.T) {
	dir := t.TempDir()
	fakeIdentity(t, dir)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(t.Context(), []string{"run", "--state", dir, "--backend", "stdio", "--dns", "127.0.0.1"}, inR, outW, &stderr)
		outW.Close()
	}()
	lines := bufio.NewScanner(outR)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stdout ended; stderr:\n%s", stderr.String())
		}
		var m map[string]any
		if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
			t.Fatalf("stdout carries a line that is not the protocol's: %q", lines.Text())
		}
		return m
	}
	go fmt.Fprintln(inW, `{"type":"hello","protocol":1,"name":"test-app","caps":{"sms":{}}}`)
	if w := next(); w["type"] != "welcome" {
		t.Fatalf("first line %v", w)
	}
	// The server at 127.0.0.1:9 does not answer: a status with the reason.
	for {
		m := next()
		if m["type"] == "status" && m["connected"] == false && m["error"] != nil {
			break
		}
	}
	fmt.Fprintln(inW, `{"type":"network","dns":["192.0.2.53"]}`)
	inW.Close()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop after its stdin closed")
	}
	if !strings.Contains(stderr.String(), "closed the connection") {
		t.Fatalf("stderr lacks the reason for stopping:\n%s", stderr.String())
	}
}

// TestUnpairedExitCode: once the server refused the device, `run` exits 3
// at once (no dialling) and `status` says "unpaired — pair again".
func TestUnpairedExitCode(t *testing.T) {
	dir := t.TempDir()
	fakeIdentity(t, dir)
	if code, out, errOut := runCLI(t, "status", "--state", dir); code != 0 || !strings.HasPrefix(out, "paired\n") {
		t.Fatalf("status of a paired device: %d %q %q", code, out, errOut)
	}
	u, _ := json.Marshal(agent.Unpaired{At: time.Now(), Reason: "the server refused the device certificate"})
	if err := os.WriteFile(filepath.Join(dir, agent.UnpairedFile), u, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "status", "--state", dir)
	if code != exitUnpaired || !strings.HasPrefix(out, "unpaired — pair again") || !strings.Contains(out, "pair --force") {
		t.Fatalf("status of a refused device: %d %q %q", code, out, errOut)
	}
	start := time.Now()
	code, _, errOut = runCLI(t, "run", "--state", dir, "--control", "")
	if code != exitUnpaired || !strings.Contains(errOut, "unpaired — pair again") {
		t.Fatalf("run of a refused device: exit %d, %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("run took %s to give up: it must not dial", d)
	}
	if code, _, errOut := runCLI(t, "status", "--state", t.TempDir()); code != 1 || !strings.Contains(errOut, "not paired yet") {
		t.Fatalf("status of an empty directory: %d %q", code, errOut)
	}
}
