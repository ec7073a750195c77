package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// PhoneApp is the Android app's protocol side on a JVM: the app's real Java classes
// (agent/android/src/it's PhoneDriver around Pairing, AgentRunner, AgentLink, Router, SmsPath,
// SendLog, Inbox) with a fake SmsManager and SMS broadcast, running the real agent
// (bin/rcsgate-agent) with --backend stdio. It reports what it does as JSON lines (see
// PhoneDriver's doc) and takes commands the same way.
type PhoneApp struct {
	Dir   string // the app's private files: agent state, inbox, send log, agent.log
	stdin io.WriteCloser
	mu    sync.Mutex
	seen  []map[string]any
	more  chan struct{}
	done  chan struct{}
}

// ErrNoJava is returned by AndroidClasspath when there is no JDK or no fetched jars.
var ErrNoJava = errors.New("harness: java or the Android app's jars are missing (make apk fetches them)")

// AndroidClasspath compiles the app's classes and the driver with agent/android/build.sh into
// out and returns the classpath to run them with.
func AndroidClasspath(root, out string) (string, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return "", ErrNoJava
	}
	cmd := exec.Command(filepath.Join(root, "agent/android/build.sh"), "classes", out)
	cmd.Env = append(os.Environ(), "RCSGATE_ANDROID_BUILD="+filepath.Join(out, "build"))
	if b, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(b), "mvn not found") {
			return "", ErrNoJava
		}
		return "", fmt.Errorf("harness: build.sh classes: %w\n%s", err, b)
	}
	cp, err := os.ReadFile(filepath.Join(out, "classpath"))
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return strings.TrimSpace(string(cp)), nil
}

// PhoneAppOptions configure StartPhoneApp.
type PhoneAppOptions struct {
	Classpath string // from AndroidClasspath
	User      string // the Matrix user it pairs for; default the stack's user
	Name      string // a name for its files and log; default "phone-app"
	Echo      string // a number whose SMS come straight back (benchmarks)
	// RCS also runs the RCS path through a faked messaging app (PhoneDriver --rcs: notifications
	// posted by command, a fixture compose screen).
	RCS bool
}

// StartPhoneApp pairs a new phone app for o.User and starts it; Down stops it.
func (st *Stack) StartPhoneApp(ctx context.Context, o PhoneAppOptions) (*PhoneApp, error) {
	if o.User == "" {
		o.User = st.Info.UserID
	}
	if o.Name == "" {
		o.Name = "phone-app"
	}
	link, err := st.PairLinkFor(ctx, o.User, o.Name)
	if err != nil {
		return nil, err
	}
	p := &PhoneApp{Dir: filepath.Join(st.Opts.Dir, o.Name), more: make(chan struct{}, 1), done: make(chan struct{})}
	args := []string{"-cp", o.Classpath, "net.rcsgate.phone.it.PhoneDriver",
		"--agent", st.bin("rcsgate-agent"), "--files", p.Dir, "--link", link}
	if o.Echo != "" {
		args = append(args, "--echo", o.Echo)
	}
	if o.RCS {
		args = append(args, "--rcs")
	}
	cmd := exec.Command("java", args...)
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := st.StartProcess(o.Name, cmd); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			p.mu.Lock()
			p.seen = append(p.seen, m)
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
	}()
	return p, nil
}

// Send gives the app a command ({"cmd":"receive",...}, see PhoneDriver).
func (p *PhoneApp) Send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("harness: phone app: %w", err)
	}
	return nil
}

// Wait returns the first report at index from or later that matches, and its index.
func (p *PhoneApp) Wait(ctx context.Context, from int, match func(map[string]any) bool) (map[string]any, int, error) {
	for {
		p.mu.Lock()
		for i := from; i < len(p.seen); i++ {
			if match(p.seen[i]) {
				m := p.seen[i]
				p.mu.Unlock()
				return m, i, nil
			}
		}
		n := len(p.seen)
		p.mu.Unlock()
		select {
		case <-p.more:
		case <-p.done:
			p.mu.Lock()
			grew := len(p.seen) > n
			p.mu.Unlock()
			if !grew {
				return nil, 0, errors.New("harness: the phone app exited")
			}
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Len is how many reports came so far (a cursor for Wait).
func (p *PhoneApp) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

// Count is how many reports match.
func (p *PhoneApp) Count(match func(map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.seen {
		if match(m) {
			n++
		}
	}
	return n
}

// Connected matches a status report with the channel up.
func Connected(m map[string]any) bool { return m["ev"] == "status" && m["connected"] == true }
