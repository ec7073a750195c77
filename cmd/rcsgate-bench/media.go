package main

// The media benchmark (--media): one large file each way through the bridge,
// with the wall time and the peak resident memory of rcsgate and the agent,
// against uploading and downloading the same file straight to the
// homeserver. Files are streamed on every side, this process included: the
// bytes come from sim.Pattern and are checked by SHA-256 as they arrive.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/loadmeter"
	"github.com/rcsgate/rcsgate/internal/wire"
)

const (
	// mediaWait bounds each transfer (one direction, or the direct baseline).
	mediaWait = 10 * time.Minute
	// rssEvery is how often resident memory is sampled.
	rssEvery = 20 * time.Millisecond
	// mediaNumber is a quiet simulator contact: it never answers, so the
	// file sent to it is not echoed back.
	mediaNumber = "+12025550177"
	mib         = 1 << 20
)

// RSS is what one process's memory looked like during a phase, in bytes.
type RSS struct {
	Start   int64 `json:"start"`   // VmRSS at the first sample
	Max     int64 `json:"max"`     // largest VmRSS sampled
	Samples int   `json:"samples"` // how many samples were taken
}

// MediaLeg is one transfer.
type MediaLeg struct {
	Name    string  `json:"name"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"total_s"` // sender starts until the receiver checked every byte
	// Steps: what Seconds is made of, in order; Hops: the bridge's part of
	// it, from rcsgate's and the agent's marks (internal/hoptrace).
	Steps   []MediaStep    `json:"steps"`
	Hops    []MediaStep    `json:"hops,omitempty"`
	Load    loadmeter.Span `json:"load"`
	t0      time.Time      // when the leg started
	key     string         // the id the hops are marked with
	marks   []mediaMark    // which marks make its hops
	MBps    float64        `json:"mb_per_s"` // Bytes / Seconds, in MB (10^6) per second
	Ratio   float64        `json:"ratio_over_direct,omitempty"`
	Rcsgate RSS            `json:"rcsgate_rss"`
	Agent   RSS            `json:"agent_rss"`
	Self    RSS            `json:"bench_rss"` // this process: the Go client streams too
}

// MediaStep is a timed part of a leg.
type MediaStep struct {
	What    string  `json:"what"`
	Seconds float64 `json:"s"`
}

// MediaReport is every figure of a --media run; it is also the JSON output.
type MediaReport struct {
	StartedAt  time.Time `json:"started_at"`
	Homeserver string    `json:"homeserver"`
	Host       struct {
		OS   string `json:"os"`
		Arch string `json:"arch"`
		CPUs int    `json:"cpus"`
	} `json:"host"`
	Size     int64      `json:"size"`
	SHA256   string     `json:"sha256"`
	LimitRSS int64      `json:"rcsgate_rss_limit"`
	Legs     []MediaLeg `json:"legs"` // phone→Matrix, Matrix→phone, direct
	// VmHWM at the end: the peak over each process's whole life, start-up
	// and every leg included (the kernel's counter cannot be reset).
	RcsgateHWM   int64    `json:"rcsgate_vmhwm"`
	AgentHWM     int64    `json:"agent_vmhwm"`
	SelfHWM      int64    `json:"bench_vmhwm"`
	TotalSeconds float64  `json:"total_s"`
	Failures     []string `json:"failures"`
	OK           bool     `json:"ok"`
}

// mediaMark is one point of a leg's hop breakdown.
type mediaMark struct{ hop, what string }

var (
	upMarks = []mediaMark{
		{hoptrace.Delivered, "phone: file stored by the agent (copy, hash, fsync)"},
		{hoptrace.InRecv, "agent -> rcsgate: the message"},
		{hoptrace.MediaUpStart, "rcsgate: portal event handling starts"},
		{hoptrace.MediaUpDone, "agent -> QUIC -> rcsgate -> homeserver upload (streamed)"},
		{hoptrace.InMatrix, "rcsgate: event sent by the ghost"},
	}
	downMarks = []mediaMark{
		{hoptrace.Pushed, "homeserver -> rcsgate: the event"},
		{hoptrace.OnStream, "rcsgate: handled, outbox, on the QUIC stream"},
		{hoptrace.AgentStored, "agent: message journaled"},
		{hoptrace.MediaDownStart, "agent: starts pulling the file"},
		{hoptrace.MediaDownDone, "homeserver -> rcsgate -> QUIC -> agent disk (streamed, fsync)"},
		{hoptrace.Handed, "phone: took the file"},
	}
)

// hops fills l.Hops from the trace: the time from the leg's start (or the
// previous mark seen) to each mark.
func (l *MediaLeg) hops(tr hoptrace.Trace) {
	prev := l.t0
	for _, m := range l.marks {
		at, ok := tr.At(m.hop, l.key)
		if !ok {
			continue
		}
		l.Hops = append(l.Hops, MediaStep{What: m.what, Seconds: at.Sub(prev).Seconds()})
		prev = at
	}
}

// runMedia is `rcsgate-bench --media`.
func runMedia(ctx context.Context, cfg Config, dir string) (*MediaReport, error) {
	binDir, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	rep := &MediaReport{StartedAt: time.Now().UTC().Truncate(time.Second), Size: cfg.MediaSize,
		LimitRSS: cfg.RSSLimit, Failures: []string{}}
	rep.Host.OS, rep.Host.Arch, rep.Host.CPUs = runtime.GOOS, runtime.GOARCH, runtime.NumCPU()
	started := time.Now()
	if rep.SHA256, err = patternSum(cfg.MediaSize); err != nil {
		return nil, err
	}

	traceDir, err := traceHops(dir)
	if err != nil {
		return nil, err
	}
	progress("media: starting the homeserver, rcsgate and the simulated phone in %s", dir)
	st, err := harness.Up(ctx, harness.Options{Dir: dir, BinDir: binDir})
	if err != nil {
		return nil, err
	}
	defer st.Down()
	rep.Homeserver = st.HS.Kind()
	gwPID, err := findPID(filepath.Join(binDir, "rcsgate"), st.ConfigPath)
	if err != nil {
		return nil, err
	}
	agentPID, err := findPID(filepath.Join(binDir, "rcsgate-agent"), st.AgentState)
	if err != nil {
		return nil, err
	}
	progress("media: %s up; rcsgate pid %d, agent pid %d; %d-byte file, sha256 %s",
		rep.Homeserver, gwPID, agentPID, cfg.MediaSize, rep.SHA256)
	a, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	pids := [3]int{gwPID, agentPID, os.Getpid()}

	// The portal exists before the clock starts: creating a room is not
	// moving a file.
	room, err := openQuietPortal(ctx, st, a)
	if err != nil {
		return nil, err
	}

	// 1. Phone → Matrix.
	up, err := measure(ctx, pids, func(ctx context.Context, leg *MediaLeg) error {
		return phoneToMatrix(ctx, st, a, cfg.MediaSize, rep.SHA256, leg)
	})
	if err != nil {
		return nil, fmt.Errorf("phone -> Matrix: %w", err)
	}
	up.Name = "bridge phone -> Matrix"

	// 2. Matrix → phone, in the same portal.
	down, err := measure(ctx, pids, func(ctx context.Context, leg *MediaLeg) error {
		return matrixToPhone(ctx, st, a, room, cfg.MediaSize, rep.SHA256, leg)
	})
	if err != nil {
		return nil, fmt.Errorf("Matrix -> phone: %w", err)
	}
	down.Name = "bridge Matrix -> phone"

	// 3. Baseline: the same file up to the media repository and back, no bridge.
	direct, err := measure(ctx, pids, func(ctx context.Context, leg *MediaLeg) error {
		mxc, err := upload(ctx, a, cfg.MediaSize, "direct", leg)
		if err != nil {
			return err
		}
		return download(ctx, a, mxc, cfg.MediaSize, rep.SHA256, leg)
	})
	if err != nil {
		return nil, fmt.Errorf("direct upload and download: %w", err)
	}
	direct.Name = "direct upload+download (no bridge)"
	if direct.Seconds > 0 {
		up.Ratio, down.Ratio = up.Seconds/direct.Seconds, down.Seconds/direct.Seconds
	}
	rep.Legs = []MediaLeg{up, down, direct}
	trace, err := hoptrace.Read(traceDir)
	if err != nil {
		return nil, fmt.Errorf("reading the hop trace: %w", err)
	}
	for i := range rep.Legs[:2] {
		rep.Legs[i].hops(trace)
	}

	var hwm [3]int64
	for i, pid := range pids {
		s, err := procStatus(pid)
		if err != nil {
			return nil, err
		}
		hwm[i] = s.hwm
	}
	rep.RcsgateHWM, rep.AgentHWM, rep.SelfHWM = hwm[0], hwm[1], hwm[2]
	for _, l := range rep.Legs[:2] {
		if l.Rcsgate.Max >= cfg.RSSLimit {
			rep.Failures = append(rep.Failures, fmt.Sprintf("MISS: rcsgate peak RSS %.1f MiB during %s, limit %.0f MiB",
				float64(l.Rcsgate.Max)/mib, l.Name, float64(cfg.RSSLimit)/mib))
		}
	}
	if rep.RcsgateHWM >= cfg.RSSLimit {
		rep.Failures = append(rep.Failures, fmt.Sprintf("MISS: rcsgate VmHWM %.1f MiB, limit %.0f MiB",
			float64(rep.RcsgateHWM)/mib, float64(cfg.RSSLimit)/mib))
	}
	rep.OK = len(rep.Failures) == 0
	rep.TotalSeconds = time.Since(started).Seconds()
	return rep, nil
}

// measure runs one leg under a deadline while sampling the three processes'
// resident memory.
func measure(ctx context.Context, pids [3]int, run func(context.Context, *MediaLeg) error) (MediaLeg, error) {
	ctx, cancel := context.WithTimeout(ctx, mediaWait)
	defer cancel()
	s := startSampler(pids)
	load := loadmeter.Take()
	leg := MediaLeg{t0: time.Now()}
	err := run(ctx, &leg)
	leg.Seconds = time.Since(leg.t0).Seconds()
	leg.Load = loadmeter.Since(load)
	rss := s.stop()
	leg.Rcsgate, leg.Agent, leg.Self = rss[0], rss[1], rss[2]
	if leg.Seconds > 0 {
		leg.MBps = float64(leg.Bytes) / 1e6 / leg.Seconds
	}
	return leg, err
}

func (l *MediaLeg) step(what string, since time.Time) {
	l.Steps = append(l.Steps, MediaStep{What: what, Seconds: time.Since(since).Seconds()})
}

// openQuietPortal has the quiet contact write a text and returns the
// portal it lands in.
func openQuietPortal(ctx context.Context, st *harness.Stack, a *harness.Client) (id.RoomID, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	text := "bench media portal " + nonce()
	from := a.Now()
	if err := st.InjectEvent(ctx, sim.InjectRequest{From: mediaNumber, Text: text}); err != nil {
		return "", fmt.Errorf("media: open the portal: %w", err)
	}
	evt, _, err := a.WaitEvent(ctx, from, a.Message("", "", text))
	if err != nil {
		return "", fmt.Errorf("media: the portal's first message did not arrive: %w", err)
	}
	return evt.RoomID, nil
}

// phoneToMatrix makes the quiet contact send a generated file and waits for
// it in Matrix, then downloads it from the media repository.
func phoneToMatrix(ctx context.Context, st *harness.Stack, a *harness.Client, size int64, sum string, leg *MediaLeg) error {
	name := "bench-up-" + nonce() + ".bin"
	from := a.Now()
	t := time.Now()
	err := st.InjectEvent(ctx, sim.InjectRequest{ID: "bench-media-" + nonce(), From: mediaNumber, Kind: wire.KindMedia,
		Media: &wire.Media{Name: name, Mime: "application/octet-stream"}, Generate: size})
	if err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	leg.step("phone: file generated, agent stored it", t)
	t = time.Now()
	evt, _, err := a.WaitEvent(ctx, from, func(e *event.Event) bool {
		if e.Type != event.EventMessage {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsMessage().FileName == name
	})
	if err != nil {
		return fmt.Errorf("the file did not reach Matrix within %s: %w", mediaWait, err)
	}
	leg.step("bridge: agent -> rcsgate -> media repo, event in Matrix", t)
	leg.key, leg.marks = phoneID(evt), upMarks
	c := evt.Content.AsMessage()
	if c.MsgType == event.MsgNotice {
		return fmt.Errorf("the bridge sent a notice instead of the file: %q", c.Body)
	}
	if c.Info == nil || int64(c.Info.Size) != size {
		return fmt.Errorf("the event announces %+v, want size %d", c.Info, size)
	}
	mxc, err := c.URL.Parse()
	if err != nil {
		return fmt.Errorf("media URL %q: %w", c.URL, err)
	}
	return download(ctx, a, mxc, size, sum, leg)
}

// matrixToPhone uploads a file, sends it to the portal and waits until the
// phone sent it, then reads the phone's copy.
func matrixToPhone(ctx context.Context, st *harness.Stack, a *harness.Client, room id.RoomID, size int64, sum string, leg *MediaLeg) error {
	name := "bench-down-" + nonce() + ".bin"
	mxc, err := upload(ctx, a, size, name, leg)
	if err != nil {
		return err
	}
	t := time.Now()
	resp, err := a.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgFile,
		Body: name, FileName: name, URL: mxc.CUString(), Info: &event.FileInfo{MimeType: "application/octet-stream", Size: int(size)}})
	if err != nil {
		return fmt.Errorf("send m.file: %w", err)
	}
	leg.key, leg.marks = string(resp.EventID), downMarks
	s, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.ID == string(resp.EventID) })
	if err != nil {
		return fmt.Errorf("the phone did not send the file within %s: %w", mediaWait, err)
	}
	leg.step("bridge: event -> rcsgate -> agent -> phone sent", t)
	if s.Media == nil || s.Media.Size != size || s.Media.SHA256 != sum {
		return fmt.Errorf("the phone sent %+v, want %d bytes with sha256 %s", s.Media, size, sum)
	}
	t = time.Now()
	n, got, err := sentFileSum(ctx, st, string(resp.EventID))
	if err != nil {
		return err
	}
	if n != size || got != sum {
		return fmt.Errorf("the phone's copy is %d bytes with sha256 %s, want %d bytes with %s", n, got, size, sum)
	}
	leg.step("check: read the phone's copy", t)
	leg.Bytes = size
	return nil
}

// upload streams size pattern bytes to the media repository.
func upload(ctx context.Context, a *harness.Client, size int64, name string, leg *MediaLeg) (id.ContentURI, error) {
	t := time.Now()
	up, err := a.UploadMedia(ctx, mautrix.ReqUploadMedia{Content: io.LimitReader(sim.Pattern(), size), ContentLength: size,
		ContentType: "application/octet-stream", FileName: name})
	if err != nil {
		return id.ContentURI{}, fmt.Errorf("upload %d bytes: %w", size, err)
	}
	leg.step("client: upload to media repo", t)
	return up.ContentURI, nil
}

// download streams a file from the media repository and checks it.
func download(ctx context.Context, a *harness.Client, mxc id.ContentURI, size int64, sum string, leg *MediaLeg) error {
	t := time.Now()
	resp, err := a.Download(ctx, mxc)
	if err != nil {
		return fmt.Errorf("download %s: %w", mxc, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("download %s: %w", mxc, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
		return fmt.Errorf("downloaded %d bytes with sha256 %s, want %d bytes with %s", n, got, size, sum)
	}
	leg.step("client: download from media repo, checked", t)
	leg.Bytes = size
	return nil
}

// sentFileSum streams the phone's copy of a sent file (GET /v1/media/{id}
// of the sim's control API) through SHA-256; harness.SentFile would read
// it whole into memory.
func sentFileSum(ctx context.Context, st *harness.Stack, eventID string) (int64, string, error) {
	body, err := st.OpenSentFile(ctx, eventID)
	if err != nil {
		return 0, "", fmt.Errorf("phone's copy: %w", err)
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return 0, "", fmt.Errorf("phone's copy: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func patternSum(size int64) (string, error) {
	h := sha256.New()
	if _, err := io.CopyN(h, sim.Pattern(), size); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// findPID finds the running process started as exe whose command line
// names arg (the harness does not export its children's pids).
func findPID(exe, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("media: %w (the RSS figures need Linux /proc)", err)
	}
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) > 1 && args[0] == exe && containsArg(args[1:], arg) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("media: want one %s process for %s, found %v", filepath.Base(exe), arg, found)
	}
	return found[0], nil
}

func containsArg(args []string, want string) bool {
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}

type status struct{ rss, hwm int64 }

// procStatus reads VmRSS and VmHWM (bytes) from /proc/<pid>/status.
func procStatus(pid int) (status, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return status{}, err
	}
	defer f.Close()
	var s status
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &s.rss
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &s.hwm
		default:
			continue
		}
		fields := strings.Fields(string(line))
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return status{}, err
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return status{}, err
	}
	if s.rss == 0 {
		return status{}, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return s, nil
}

// sampler records the largest VmRSS of some processes on a ticker.
type sampler struct {
	stopC chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	rss   [3]RSS
}

func startSampler(pids [3]int) *sampler {
	s := &sampler{stopC: make(chan struct{}), done: make(chan struct{})}
	take := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, pid := range pids {
			st, err := procStatus(pid)
			if err != nil {
				continue // exited: the leg fails on its own
			}
			r := &s.rss[i]
			if r.Samples == 0 {
				r.Start = st.rss
			}
			r.Samples++
			r.Max = max(r.Max, st.rss)
		}
	}
	take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			select {
			case <-s.stopC:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

func (s *sampler) stop() [3]RSS {
	close(s.stopC)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rss
}

func mibs(n int64) string { return fmt.Sprintf("%.1f", float64(n)/mib) }

func (r *MediaReport) print(w io.Writer) {
	fmt.Fprintf(w, "rcsgate-bench --media  %s  %s/%s, %d CPUs, loopback, %s\n",
		r.StartedAt.Format(time.RFC3339), r.Host.OS, r.Host.Arch, r.Host.CPUs, r.Homeserver)
	fmt.Fprintf(w, "file: %d bytes (%.1f MiB) of sim.Pattern, sha256 %s, checked at the receiving end\n\n", r.Size, float64(r.Size)/mib, r.SHA256)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\ttime s\tMB/s\tx direct\trcsgate RSS MiB start/max\tagent RSS MiB start/max\tbench RSS MiB max\t")
	for _, l := range r.Legs {
		ratio := ""
		if l.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", l.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%s\t%s / %s\t%s / %s\t%s\t\n", l.Name, l.Seconds, l.MBps, ratio,
			mibs(l.Rcsgate.Start), mibs(l.Rcsgate.Max), mibs(l.Agent.Start), mibs(l.Agent.Max), mibs(l.Self.Max))
	}
	_ = tw.Flush()

	for _, l := range r.Legs {
		loadNote(w, l.Name, l.Load)
	}
	fmt.Fprintf(w, "\nSteps (s):\n")
	for _, l := range r.Legs {
		fmt.Fprintf(w, "  %s\n", l.Name)
		for _, s := range l.Steps {
			fmt.Fprintf(w, "    %7.2f  %s\n", s.Seconds, s.What)
		}
		if len(l.Hops) > 0 {
			fmt.Fprintf(w, "    hops, from the leg's start (rcsgate's and the agent's marks):\n")
			for _, s := range l.Hops {
				fmt.Fprintf(w, "      %7.3f  %s\n", s.Seconds, s.What)
			}
		}
	}
	fmt.Fprintf(w, "\nRSS sampled every %s (VmRSS); VmHWM at the end (whole life): rcsgate %s MiB, agent %s MiB, bench %s MiB\n",
		rssEvery, mibs(r.RcsgateHWM), mibs(r.AgentHWM), mibs(r.SelfHWM))
	verdict := func(v int64) string {
		if v < r.LimitRSS {
			return "PASS"
		}
		return "MISS"
	}
	for _, l := range r.Legs[:2] {
		fmt.Fprintf(w, "  %s  rcsgate peak %s MiB during %s (limit %s MiB)\n", verdict(l.Rcsgate.Max), mibs(l.Rcsgate.Max), l.Name, mibs(r.LimitRSS))
	}
	fmt.Fprintf(w, "  %s  rcsgate VmHWM %s MiB (limit %s MiB)\n", verdict(r.RcsgateHWM), mibs(r.RcsgateHWM), mibs(r.LimitRSS))
	writeVerdict(w, r.OK, r.TotalSeconds, r.Failures)
}

func (r *MediaReport) writeJSON(path string) error { return writeJSONFile(path, r) }

// mediaMain runs the media benchmark and prints its report.
func mediaMain(ctx context.Context, cfg Config, dir string) error {
	rep, err := runMedia(ctx, cfg, dir)
	if err != nil {
		return err
	}
	rep.print(os.Stdout)
	if cfg.JSON != "" {
		if err := rep.writeJSON(cfg.JSON); err != nil {
			return err
		}
	}
	if !rep.OK {
		return errors.New(strings.Join(rep.Failures, "; "))
	}
	return nil
}
