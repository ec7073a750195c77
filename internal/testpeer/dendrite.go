package testpeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Dendrite binary names inside the bin dir.
const (
	dendriteBin       = "dendrite"
	generateConfigBin = "generate-config"
	generateKeysBin   = "generate-keys"
)

// Files Dendrite uses inside Options.Dir.
const (
	dendriteConfigFile = "dendrite.yaml"
	dendriteKeyFile    = "matrix_key.pem"
	dendriteLogFile    = "dendrite.log"
)

// mediaUploadLimit is the media repository's upload limit in both test
// homeservers: above the 100 MiB phones send (wire.MaxMediaSize), so a full
// size file is carried, and the bridge's own limit is what refuses more.
const mediaUploadLimit = 200 << 20

// Port collisions between FreeLoopbackPort and the child's bind are retried
// this many times when the caller let us pick the port.
const portAttempts = 3

// Dendrite is a running Dendrite homeserver. StartDendrite returns it as a
// Homeserver; the concrete type adds Dendrite-specific accessors.
type Dendrite struct{ server }

var _ Homeserver = (*Dendrite)(nil)

// StartDendrite writes a config into opts.Dir, starts Dendrite on loopback
// and returns once /_matrix/client/versions answers. ctx bounds only the
// startup; the process runs until Stop.
func StartDendrite(ctx context.Context, opts Options) (Homeserver, error) {
	d, err := startDendrite(ctx, opts)
	if err != nil {
		return nil, err
	}
	return d, nil
}

func startDendrite(ctx context.Context, opts Options) (*Dendrite, error) {
	dir, serverName, ctx, cancel, err := prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cancel()

	bins := map[string]string{}
	for _, name := range []string{dendriteBin, generateConfigBin, generateKeysBin} {
		if bins[name], err = findBinary(opts.BinDir, name); err != nil {
			return nil, err
		}
	}

	secret, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	configPath, err := writeDendriteConfig(ctx, bins, dir, serverName, secret, opts.AppserviceRegistrations)
	if err != nil {
		return nil, err
	}

	d := &Dendrite{server{
		kind:         "dendrite",
		dir:          dir,
		configPath:   configPath,
		serverName:   serverName,
		sharedSecret: secret,
		logFile:      dendriteLogFile,
		client:       newLoopbackClient(),
		// Dendrite 0.13.8 starts its federation consumers before it wires
		// the roomserver's queryer (cmd/dendrite/main.go: SetFederationAPI
		// comes after federationapi.NewInternalAPI); after a crash their
		// queue on disk still holds room events, and the first one read in
		// that window dereferences the nil queryer.
		crashedAtStart: func(tail string) bool {
			return strings.Contains(tail, "nil pointer dereference") && strings.Contains(tail, "federationapi/consumers")
		},
	}}
	err = d.start(ctx, opts, bins[dendriteBin], func(port int) ([]string, error) {
		return []string{"--config", d.configPath, "--http-bind-address", "127.0.0.1:" + strconv.Itoa(port)}, nil
	}, func(tail string) bool { return strings.Contains(tail, "address already in use") })
	if err != nil {
		return nil, err
	}
	return d, nil
}

// writeDendriteConfig generates a config with Dendrite's own tool and
// rewrites the keys that make it a private, loopback-only test server.
func writeDendriteConfig(ctx context.Context, bins map[string]string, dir, serverName, secret string, appservices []string) (string, error) {
	keyPath := filepath.Join(dir, dendriteKeyFile)
	// Reuse an existing key so a restarted server on the same Dir keeps the
	// identity its databases were written with.
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if _, err := runTool(ctx, dir, bins[generateKeysBin], "--private-key", keyPath); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", fmt.Errorf("testpeer: stat key: %w", err)
	}

	raw, err := runTool(ctx, dir, bins[generateConfigBin], "-ci", "-dir", dir, "-server", serverName)
	if err != nil {
		return "", err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("testpeer: parse generated dendrite config: %w", err)
	}

	asFiles := make([]any, 0, len(appservices))
	for _, p := range appservices {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("testpeer: appservice registration %q: %w", p, err)
		}
		// Dendrite would fail later with a less obvious message.
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("testpeer: appservice registration: %w", err)
		}
		asFiles = append(asFiles, abs)
	}

	db := func(name string) string { return "file:" + filepath.Join(dir, "dendrite_"+name+".db") }
	sets := []struct {
		path  string
		value any
	}{
		{"global.server_name", serverName},
		{"global.private_key", keyPath},
		{"global.disable_federation", true},
		// -ci turns outbound presence on; it is federation-only, and with
		// queues on disk Dendrite 0.13.8 can crash at a restart with it: its
		// federation consumer replays a restored join and asks a roomserver
		// queryer not yet wired (nil pointer in sendPresence).
		{"global.presence.enable_outbound", false},
		// Nothing may leave the machine.
		{"global.trusted_third_party_id_servers", []any{}},
		{"global.report_stats.enabled", false},
		{"global.metrics.enabled", false},
		{"global.sentry.enabled", false},
		{"global.dns_cache.enabled", false},
		// Avoid a surprise "_server" account and room in every test.
		{"global.server_notices.enabled", false},
		{"global.database.connection_string", ""},
		{"global.jetstream.addresses", []any{}},
		// Queues on disk, as a real deployment keeps them: in memory, a
		// crash drops the appservice transactions not yet delivered (and
		// the sync API's pending events) for good.
		{"global.jetstream.in_memory", false},
		{"global.jetstream.storage_path", filepath.Join(dir, "jetstream")},
		{"client_api.registration_disabled", true},
		{"client_api.registration_requires_token", false},
		{"client_api.registration_shared_secret", secret},
		{"client_api.enable_registration_captcha", false},
		{"client_api.rate_limiting.enabled", false},
		{"app_service_api.config_files", asFiles},
		{"federation_api.database.connection_string", db("federationapi")},
		{"federation_api.key_perspectives", []any{}},
		{"key_server.database.connection_string", db("keyserver")},
		{"media_api.database.connection_string", db("mediaapi")},
		{"media_api.base_path", filepath.Join(dir, "media")},
		// Phones send files up to 100 MiB (wire.MaxMediaSize); the default
		// 10 MiB would refuse them.
		{"media_api.max_file_size_bytes", mediaUploadLimit},
		{"room_server.database.connection_string", db("roomserver")},
		{"sync_api.database.connection_string", db("syncapi")},
		{"sync_api.search.index_path", filepath.Join(dir, "searchindex")},
		{"user_api.account_database.connection_string", db("userapi")},
		// Cheap password hashing: tests register many users.
		{"user_api.bcrypt_cost", 4},
		{"relay_api.database.connection_string", db("relayapi")},
		{"mscs.database.connection_string", db("mscs")},
		// Plain spec behaviour; -ci turns on experimental MSCs.
		{"mscs.mscs", []any{}},
		{"tracing.enabled", false},
		{"logging", []any{map[string]any{"type": "std", "level": "info"}}},
	}
	for _, s := range sets {
		if err := setPath(cfg, s.path, s.value); err != nil {
			return "", fmt.Errorf("testpeer: dendrite config: %w", err)
		}
	}

	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("testpeer: encode dendrite config: %w", err)
	}
	configPath := filepath.Join(dir, dendriteConfigFile)
	// 0600: the file holds the registration shared secret.
	if err := os.WriteFile(configPath, out, 0o600); err != nil {
		return "", fmt.Errorf("testpeer: write dendrite config: %w", err)
	}
	return configPath, nil
}

// setPath sets a dotted key in a YAML map, creating intermediate maps.
func setPath(m map[string]any, path string, value any) error {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k]
		if !ok || next == nil {
			child := map[string]any{}
			m[k] = child
			m = child
			continue
		}
		child, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %q is a %T, not a map", path, k, next)
		}
		m = child
	}
	m[keys[len(keys)-1]] = value
	return nil
}

// runTool runs a short-lived helper binary and returns its stdout.
func runTool(ctx context.Context, dir, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("testpeer: %s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("testpeer: random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
