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
	"sort"
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
	// targetMediaRatio: each bridge leg at most this many times the direct
	// transfer (issue 14).
	targetMediaRatio = 1.5
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
	Kind    string  `json:"kind"` // legUp, legDown, legDirect
	Round   int     `json:"round"`
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
	CPU     LegCPU         `json:"cpu_s"`
}

// LegCPU is the CPU time each process used during a leg, in seconds; Rest
// is the rest of the bench's process tree (the homeserver, mostly).
type LegCPU struct {
	Rcsgate float64 `json:"rcsgate"`
	Agent   float64 `json:"agent"`
	Bench   float64 `json:"bench"`
	Rest    float64 `json:"homeserver_and_rest"`
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
	Legs     []MediaLeg `json:"legs"` // per round: phone→Matrix, Matrix→phone, direct
	Rounds   int        `json:"rounds"`
	// Summary: each kind of leg over the rounds (medians and ratios).
	Summary []MediaSummary `json:"summary"`
	// VmHWM at the end: the peak over each process's whole life, start-up
	// and every leg included (the kernel's counter cannot be reset).
	RcsgateHWM   int64   `json:"rcsgate_vmhwm"`
	AgentHWM     int64   `json:"agent_vmhwm"`
	SelfHWM      int64   `json:"bench_vmhwm"`
	TotalSeconds float64 `json:"total_s"`
	// Profiles: leg → its CPU profiles (--cpuprofile).
	Profiles map[string][]string `json:"cpu_profiles,omitempty"`
	Failures []string            `json:"failures"`
	OK       bool                `json:"ok"`
}

// mediaMark is one point of a leg's hop breakdown.
type mediaMark struct{ hop, what string }

var (
	upMarks = []mediaMark{
		{hoptrace.Delivered, "phone: file stored by the agent (moved or copied, hashed, fsync'd) and journaled"},
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
		{hoptrace.MediaDownDone, "homeserver -> rcsgate -> QUIC -> agent disk (streamed)"},
		{hoptrace.Handed, "phone: took the file, hash checked (the leg's end)"},
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
		LimitRSS: cfg.RSSLimit, Rounds: cfg.MediaRounds, Failures: []string{}}
	rep.Host.OS, rep.Host.Arch, rep.Host.CPUs = runtime.GOOS, runtime.GOARCH, runtime.NumCPU()
	started := time.Now()
	if rep.SHA256, err = patternSum(cfg.MediaSize); err != nil {
		return nil, err
	}

	traceDir, err := traceHops(dir)
	if err != nil {
		return nil, err
	}
	var prof *profiler
	if cfg.CPUProfile != "" {
		pdir, err := profileChildren(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		prof = &profiler{dir: pdir}
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
	if prof != nil {
		prof.procs = map[string]int{"rcsgate": gwPID, "rcsgate-agent": agentPID}
	}

	// The portal exists before the clock starts: creating a room is not
	// moving a file. Nor is making the file: every leg starts with it on
	// the sender's disk (the phone's, or the Matrix client's) and ends
	// when the receiver has checked every byte, so the bridge legs and the
	// direct one are timed between the same points.
	room, err := openQuietPortal(ctx, st, a)
	if err != nil {
		return nil, err
	}
	plain, err := a.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "bench media direct"})
	if err != nil {
		return nil, fmt.Errorf("media: a plain room for the direct transfer: %w", err)
	}
	local, err := writePatternFile(filepath.Join(dir, "bench-media.bin"), cfg.MediaSize)
	if err != nil {
		return nil, err
	}
	defer os.Remove(local)

	// Rounds of three legs each, in turn, so a shared machine's changing
	// load falls on all three alike; the medians are compared.
	for r := 1; r <= cfg.MediaRounds; r++ {
		progress("media: round %d of %d (%s)", r, cfg.MediaRounds, loadNow())
		legs, err := mediaRound(ctx, st, a, pids, prof, r, room, plain.RoomID, local, cfg.MediaSize, rep.SHA256)
		if err != nil {
			return nil, err
		}
		rep.Legs = append(rep.Legs, legs...)
	}
	trace, err := hoptrace.Read(traceDir)
	if err != nil {
		return nil, fmt.Errorf("reading the hop trace: %w", err)
	}
	for i := range rep.Legs {
		l := &rep.Legs[i]
		// The phone reports a file it took through a list the bench polls;
		// the agent's mark says when it took it, to the millisecond.
		if l.Kind == legDown {
			if at, ok := trace.At(hoptrace.Handed, l.key); ok && at.After(l.t0) && at.Sub(l.t0).Seconds() < l.Seconds {
				l.Seconds = at.Sub(l.t0).Seconds()
				l.MBps = float64(l.Bytes) / 1e6 / l.Seconds
			}
		}
		l.hops(trace)
	}
	for i := range rep.Legs { // ratios within a round
		l := &rep.Legs[i]
		for _, d := range rep.Legs {
			if d.Kind == legDirect && d.Round == l.Round && l.Kind != legDirect && d.Seconds > 0 {
				l.Ratio = l.Seconds / d.Seconds
			}
		}
	}
	rep.Summary = summarize(rep.Legs)
	if prof != nil {
		rep.Profiles = prof.Files
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
	for _, l := range rep.Legs {
		if l.Kind != legDirect && l.Rcsgate.Max >= cfg.RSSLimit {
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

// Leg kinds.
const (
	legUp     = "up"
	legDown   = "down"
	legDirect = "direct"
)

var legNames = map[string]string{
	legUp:     "bridge phone -> Matrix",
	legDown:   "bridge Matrix -> phone",
	legDirect: "direct upload+download (no bridge)",
}

// mediaRound runs the three legs once each: phone → Matrix, Matrix → phone
// in the portal, and the same file between Matrix users without the bridge.
func mediaRound(ctx context.Context, st *harness.Stack, a *harness.Client, pids [3]int, prof *profiler, round int,
	portal, plain id.RoomID, local string, size int64, sum string) ([]MediaLeg, error) {
	tag := fmt.Sprintf("-%d", round)
	phoneFile, err := st.PhoneFile(ctx, size)
	if err != nil {
		return nil, fmt.Errorf("media: a file on the phone: %w", err)
	}
	up, err := measure(ctx, pids, prof, legUp+tag, func(ctx context.Context, leg *MediaLeg) error {
		return phoneToMatrix(ctx, st, a, phoneFile, size, sum, leg)
	})
	if err != nil {
		return nil, fmt.Errorf("phone -> Matrix: %w", err)
	}
	var sentID string
	down, err := measure(ctx, pids, prof, legDown+tag, func(ctx context.Context, leg *MediaLeg) error {
		var err error
		sentID, err = matrixToPhone(ctx, st, a, portal, local, size, sum, leg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("Matrix -> phone: %w", err)
	}
	// Once more, off the clock: the phone's kept copy, read back whole.
	if n, got, err := sentFileSum(ctx, st, sentID); err != nil {
		return nil, fmt.Errorf("Matrix -> phone: %w", err)
	} else if n != size || got != sum {
		return nil, fmt.Errorf("Matrix -> phone: the phone's copy is %d bytes with sha256 %s, want %d bytes with %s", n, got, size, sum)
	}
	direct, err := measure(ctx, pids, prof, legDirect+tag, func(ctx context.Context, leg *MediaLeg) error {
		return matrixToMatrix(ctx, a, plain, local, size, sum, leg)
	})
	if err != nil {
		return nil, fmt.Errorf("direct upload and download: %w", err)
	}
	legs := []MediaLeg{up, down, direct}
	for i, kind := range []string{legUp, legDown, legDirect} {
		legs[i].Kind, legs[i].Round, legs[i].Name = kind, round, legNames[kind]
	}
	return legs, nil
}

// MediaSummary is one kind of leg over every round.
type MediaSummary struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Seconds []float64 `json:"total_s"`  // per round
	Median  float64   `json:"median_s"` // of Seconds
	// Ratio: this kind's median over the direct leg's median; Ratios: each
	// round's own ratio.
	Ratio  float64   `json:"ratio_over_direct,omitempty"`
	Ratios []float64 `json:"round_ratios,omitempty"`
	median int       // index in the report's legs of the median round's leg
}

func summarize(legs []MediaLeg) []MediaSummary {
	var out []MediaSummary
	for _, kind := range []string{legUp, legDown, legDirect} {
		sum := MediaSummary{Kind: kind, Name: legNames[kind]}
		var idx []int
		for i, l := range legs {
			if l.Kind == kind {
				idx = append(idx, i)
				sum.Seconds = append(sum.Seconds, l.Seconds)
				if l.Ratio > 0 {
					sum.Ratios = append(sum.Ratios, l.Ratio)
				}
			}
		}
		if len(idx) == 0 {
			continue
		}
		sorted := append([]int(nil), idx...)
		sort.Slice(sorted, func(a, b int) bool { return legs[sorted[a]].Seconds < legs[sorted[b]].Seconds })
		sum.median = sorted[(len(sorted)-1)/2]
		sum.Median = legs[sum.median].Seconds
		out = append(out, sum)
	}
	var direct float64
	for _, s := range out {
		if s.Kind == legDirect {
			direct = s.Median
		}
	}
	for i := range out {
		if out[i].Kind != legDirect && direct > 0 {
			out[i].Ratio = out[i].Median / direct
		}
	}
	return out
}

// measure runs one leg under a deadline while sampling the three processes'
// resident memory (and profiling them, with --cpuprofile).
func measure(ctx context.Context, pids [3]int, prof *profiler, name string, run func(context.Context, *MediaLeg) error) (MediaLeg, error) {
	ctx, cancel := context.WithTimeout(ctx, mediaWait)
	defer cancel()
	if err := prof.start(name); err != nil {
		return MediaLeg{}, err
	}
	s := startSampler(pids)
	load := loadmeter.Take()
	cpu0 := processCPU(pids)
	leg := MediaLeg{t0: time.Now()}
	err := run(ctx, &leg)
	leg.Seconds = time.Since(leg.t0).Seconds()
	cpu1 := processCPU(pids)
	if perr := prof.stop(); err == nil {
		err = perr
	}
	leg.Load = loadmeter.Since(load)
	leg.CPU = LegCPU{Rcsgate: cpu1[0] - cpu0[0], Agent: cpu1[1] - cpu0[1], Bench: cpu1[2] - cpu0[2]}
	leg.CPU.Rest = max(0, leg.Load.OursCPU-leg.CPU.Rcsgate-leg.CPU.Agent-leg.CPU.Bench)
	rss := s.stop()
	leg.Rcsgate, leg.Agent, leg.Self = rss[0], rss[1], rss[2]
	if leg.Seconds > 0 {
		leg.MBps = float64(leg.Bytes) / 1e6 / leg.Seconds
	}
	return leg, err
}

func processCPU(pids [3]int) (s [3]float64) {
	for i, pid := range pids {
		s[i], _ = loadmeter.ProcessCPU(pid)
	}
	return s
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

// phoneToMatrix makes the quiet contact send a file that is on the phone
// and waits for it in Matrix, then downloads it from the media repository.
func phoneToMatrix(ctx context.Context, st *harness.Stack, a *harness.Client, file string, size int64, sum string, leg *MediaLeg) error {
	name := "bench-up-" + nonce() + ".bin"
	from := a.Now()
	t := time.Now()
	err := st.InjectEvent(ctx, sim.InjectRequest{ID: "bench-media-" + nonce(), From: mediaNumber, Kind: wire.KindMedia,
		Media: &wire.Media{Name: name, Mime: "application/octet-stream"}, File: file})
	if err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	leg.step("phone: agent stored the file", t)
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
// phone sent it with the right hash; it returns the event's id.
func matrixToPhone(ctx context.Context, st *harness.Stack, a *harness.Client, room id.RoomID, local string, size int64, sum string, leg *MediaLeg) (string, error) {
	name := "bench-down-" + nonce() + ".bin"
	mxc, err := upload(ctx, a, local, size, name, leg)
	if err != nil {
		return "", err
	}
	t := time.Now()
	resp, err := a.SendMessageEvent(ctx, room, event.EventMessage, fileEvent(name, mxc, size))
	if err != nil {
		return "", fmt.Errorf("send m.file: %w", err)
	}
	leg.key, leg.marks = string(resp.EventID), downMarks
	s, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.ID == string(resp.EventID) })
	if err != nil {
		return "", fmt.Errorf("the phone did not send the file within %s: %w", mediaWait, err)
	}
	leg.step("bridge: event -> rcsgate -> agent -> phone sent (polled)", t)
	if s.Media == nil || s.Media.Size != size || s.Media.SHA256 != sum {
		return "", fmt.Errorf("the phone sent %+v, want %d bytes with sha256 %s", s.Media, size, sum)
	}
	leg.Bytes = size
	return string(resp.EventID), nil
}

// matrixToMatrix is the baseline: the file uploaded, announced in a room,
// the event seen in sync, the file downloaded and checked.
func matrixToMatrix(ctx context.Context, a *harness.Client, room id.RoomID, local string, size int64, sum string, leg *MediaLeg) error {
	name := "bench-direct-" + nonce() + ".bin"
	mxc, err := upload(ctx, a, local, size, name, leg)
	if err != nil {
		return err
	}
	t := time.Now()
	from := a.Now()
	resp, err := a.SendMessageEvent(ctx, room, event.EventMessage, fileEvent(name, mxc, size))
	if err != nil {
		return fmt.Errorf("send m.file: %w", err)
	}
	if _, _, err := a.WaitEvent(ctx, from, func(e *event.Event) bool { return e.ID == resp.EventID }); err != nil {
		return fmt.Errorf("the file's event did not come back in sync: %w", err)
	}
	leg.step("client: m.file event sent, seen in sync", t)
	return download(ctx, a, mxc, size, sum, leg)
}

func fileEvent(name string, mxc id.ContentURI, size int64) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgFile, Body: name, FileName: name, URL: mxc.CUString(),
		Info: &event.FileInfo{MimeType: "application/octet-stream", Size: int(size)}}
}

// writePatternFile puts size sim.Pattern bytes in a file at path: the file
// a Matrix user sends.
func writePatternFile(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	_, err = io.CopyBuffer(f, io.LimitReader(sim.Pattern(), size), make([]byte, 256<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("media: the file to send: %w", err)
	}
	return path, nil
}

// upload streams a local file to the media repository.
func upload(ctx context.Context, a *harness.Client, local string, size int64, name string, leg *MediaLeg) (id.ContentURI, error) {
	t := time.Now()
	f, err := os.Open(local)
	if err != nil {
		return id.ContentURI{}, err
	}
	defer f.Close()
	up, err := a.UploadMedia(ctx, mautrix.ReqUploadMedia{Content: f, ContentLength: size,
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
	fmt.Fprintf(w, "file: %d bytes (%.1f MiB) of sim.Pattern, sha256 %s, checked at the receiving end\n", r.Size, float64(r.Size)/mib, r.SHA256)
	fmt.Fprintf(w, "each leg: from the file on the sender's disk to the receiver's check of every byte (direct: upload, m.file event seen in sync, download)\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\ttime s\tMB/s\tx direct (same round)\trcsgate RSS MiB start/max\tagent RSS MiB start/max\tbench RSS MiB max\t")
	for _, l := range r.Legs {
		ratio := ""
		if l.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", l.Ratio)
		}
		fmt.Fprintf(tw, "#%d %s\t%.2f\t%.1f\t%s\t%s / %s\t%s / %s\t%s\t\n", l.Round, l.Name, l.Seconds, l.MBps, ratio,
			mibs(l.Rcsgate.Start), mibs(l.Rcsgate.Max), mibs(l.Agent.Start), mibs(l.Agent.Max), mibs(l.Self.Max))
	}
	_ = tw.Flush()
	for _, l := range r.Legs {
		loadNote(w, fmt.Sprintf("#%d %s", l.Round, l.Name), l.Load)
	}

	fmt.Fprintf(w, "\nMedian of %d rounds (s), and its ratio to the direct transfer's median:\n", r.Rounds)
	for _, sm := range r.Summary {
		ratio := ""
		if sm.Ratio > 0 {
			ratio = fmt.Sprintf("  %.2fx (rounds:", sm.Ratio)
			for _, x := range sm.Ratios {
				ratio += fmt.Sprintf(" %.2fx", x)
			}
			ratio += ")"
		}
		fmt.Fprintf(w, "  %-36s %6.2f%s\n", sm.Name, sm.Median, ratio)
	}

	fmt.Fprintf(w, "\nCPU-s during each leg (/proc, 10 ms ticks):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\trcsgate\tagent\tbench\thomeserver+rest\tall\t")
	for _, l := range r.Legs {
		c := l.CPU
		fmt.Fprintf(tw, "#%d %s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.Round, l.Name, c.Rcsgate, c.Agent, c.Bench, c.Rest, c.Rcsgate+c.Agent+c.Bench+c.Rest)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nSteps of each kind's median round (s):\n")
	for _, sm := range r.Summary {
		l := r.Legs[sm.median]
		fmt.Fprintf(w, "  #%d %s\n", l.Round, l.Name)
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
	if len(r.Profiles) > 0 {
		fmt.Fprintf(w, "\nCPU profiles (go tool pprof -top FILE):\n")
		legs := make([]string, 0, len(r.Profiles))
		for leg := range r.Profiles {
			legs = append(legs, leg)
		}
		sort.Strings(legs)
		for _, leg := range legs {
			for _, f := range r.Profiles[leg] {
				fmt.Fprintf(w, "  %-9s  %s\n", leg, f)
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
	var peak int64
	for _, l := range r.Legs {
		if l.Kind != legDirect {
			peak = max(peak, l.Rcsgate.Max)
		}
	}
	fmt.Fprintf(w, "  %s  rcsgate peak %s MiB during the bridge legs (limit %s MiB)\n", verdict(peak), mibs(peak), mibs(r.LimitRSS))
	fmt.Fprintf(w, "  %s  rcsgate VmHWM %s MiB (limit %s MiB)\n", verdict(r.RcsgateHWM), mibs(r.RcsgateHWM), mibs(r.LimitRSS))
	fmt.Fprintf(w, "\nTargets (median over the direct transfer's median):\n")
	for _, sm := range r.Summary {
		if sm.Kind == legDirect {
			continue
		}
		met := "met"
		if sm.Ratio > targetMediaRatio {
			met = "MISSED"
		}
		fmt.Fprintf(w, "  %s %.2fx direct (target <= %.1fx): %s\n", sm.Name, sm.Ratio, targetMediaRatio, met)
	}
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
