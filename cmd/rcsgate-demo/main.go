// Command rcsgate-demo brings up a whole rcsgate deployment on loopback — a
// real Dendrite, rcsgate and a paired rcsgate-agent with the phone
// simulator — and prints how to log in. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rcsgate/rcsgate/internal/harness"
)

func main() {
	dir := flag.String("state", "demo-state", "directory for the demo's homeserver, bridge and agent state")
	bin := flag.String("bin", "bin", "directory holding rcsgate, rcsgate-agent and dendrite")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: rcsgate-demo [--state DIR] [--bin DIR]\n\nStarts Dendrite, rcsgate and a simulated phone on loopback and prints how to log in.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	absDir, _ := filepath.Abs(*dir)
	absBin, _ := filepath.Abs(*bin)
	// A fresh state every run: the demo's ports are picked anew.
	if err := os.RemoveAll(absDir); err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-demo:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "Starting Dendrite, rcsgate and the simulated phone on loopback...")
	// Encrypted portals, as a real deployment has them (the tests' harness
	// client does not decrypt, so they turn this off).
	st, err := harness.Up(ctx, harness.Options{Dir: absDir, BinDir: absBin, Encryption: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-demo:", err)
		os.Exit(1)
	}
	defer st.Down()
	i := st.Info
	fmt.Printf(`
rcsgate demo is running (state and logs in %s).

  Homeserver:  %s
  User:        %s
  Password:    %s
  Bridge bot:  %s
  Echo phone:  %s

Log in with any Matrix client (Element: "Sign in", edit the homeserver), then
  1. start a direct chat with %s (your first message may already be the command)
  2. send:  start-chat %s   (the bot answers with a link; "help" lists the rest)
  3. accept the invite to the new room and write something: the echo contact answers.
This demo runs Dendrite, which cannot cross-sign the bridge's devices: your client marks the
bridge's encrypted messages as unverified here (on Synapse or tuwunel it does not).
Other numbers are quiet contacts; make one write to you with
  bin/rcsgate-agent sim inject --state %s --from +12025550123 --text "hi there"
The same facts are in %s. Press Ctrl-C to stop.
`, absDir, i.Homeserver, i.UserID, i.Password, i.BotUserID, i.EchoNumber, i.BotUserID, i.EchoNumber,
		st.AgentState, filepath.Join(absDir, "demo.json"))
	if err := st.Wait(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rcsgate-demo:", err)
		os.Exit(1)
	}
}
