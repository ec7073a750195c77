package testpeer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// SynapseVenv is the virtualenv (inside the bin dir) that `make tools`
// installs the pinned matrix-synapse into.
const SynapseVenv = "synapse-venv"

// synapseBin is Synapse's console script; its shebang names the venv's
// python, so no activation is needed.
var synapseBin = filepath.Join(SynapseVenv, "bin", "synapse_homeserver")

// Files Synapse uses inside Options.Dir.
const (
	synapseConfigFile = "homeserver.yaml"
	synapseKeyFile    = "signing.key"
	synapseLogFile    = "synapse.log"
	synapseDBFile     = "homeserver.db"
)

// Synapse is a running Synapse homeserver (SQLite, one loopback client
// listener, no federation). StartSynapse returns it as a Homeserver.
type Synapse struct{ server }

var _ Homeserver = (*Synapse)(nil)

// StartSynapse writes a config into opts.Dir, starts Synapse from the
// project-local venv and returns once /_matrix/client/versions answers. ctx
// bounds only the startup; the process runs until Stop.
func StartSynapse(ctx context.Context, opts Options) (Homeserver, error) {
	s, err := startSynapse(ctx, opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func startSynapse(ctx context.Context, opts Options) (*Synapse, error) {
	dir, serverName, ctx, cancel, err := prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cancel()

	bin, err := findBinary(opts.BinDir, synapseBin)
	if err != nil {
		return nil, err
	}
	asFiles, err := absRegistrations(opts.AppserviceRegistrations)
	if err != nil {
		return nil, err
	}
	if err := ensureSynapseSigningKey(filepath.Join(dir, synapseKeyFile)); err != nil {
		return nil, err
	}
	secret, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	s := &Synapse{server{
		kind:         "synapse",
		dir:          dir,
		configPath:   filepath.Join(dir, synapseConfigFile),
		serverName:   serverName,
		sharedSecret: secret,
		logFile:      synapseLogFile,
		client:       newLoopbackClient(),
	}}
	err = s.start(ctx, opts, bin, func(port int) ([]string, error) {
		// The port lives in the config, so each attempt rewrites it.
		if err := writeSynapseConfig(s.configPath, dir, serverName, port, secret, asFiles); err != nil {
			return nil, err
		}
		return []string{"--config-path", s.configPath}, nil
	}, func(tail string) bool {
		// Twisted says "Address already in use"; Go's net says it lower-case.
		return strings.Contains(strings.ToLower(tail), "address already in use")
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// absRegistrations makes registration paths absolute and checks they exist,
// since Synapse would fail later with a less obvious message.
func absRegistrations(paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("testpeer: appservice registration %q: %w", p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("testpeer: appservice registration: %w", err)
		}
		out = append(out, abs)
	}
	return out, nil
}

// ensureSynapseSigningKey writes a key in Synapse's format ("ed25519 <key
// id> <unpadded base64 seed>") unless one exists: a restarted server on the
// same Dir must keep the identity its database was written with, and writing
// it here saves a slow `--generate-keys` Python start.
func ensureSynapseSigningKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testpeer: stat signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("testpeer: signing key: %w", err)
	}
	id, err := randomHex(3)
	if err != nil {
		return err
	}
	line := "ed25519 a_" + id + " " + base64.RawStdEncoding.EncodeToString(priv.Seed()) + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		return fmt.Errorf("testpeer: write signing key: %w", err)
	}
	return nil
}

// unlimited is a rate limit no test reaches: tests send hundreds of messages
// and register, log in and join quickly.
var unlimited = map[string]any{"per_second": 100000, "burst_count": 1000000}

// writeSynapseConfig writes a private, loopback-only homeserver.yaml. Keys
// are those of Synapse's config module (synapse/config/*.py).
func writeSynapseConfig(path, dir, serverName string, port int, secret string, appservices []string) error {
	cfg := map[string]any{
		"server_name":    serverName,
		"public_baseurl": fmt.Sprintf("http://127.0.0.1:%d/", port),
		"pid_file":       filepath.Join(dir, "homeserver.pid"),
		// One plain-HTTP client listener (it also serves /_synapse/admin);
		// no federation resource is served.
		"listeners": []any{map[string]any{
			"port":           port,
			"bind_addresses": []any{"127.0.0.1"},
			"type":           "http",
			"tls":            false,
			"x_forwarded":    false,
			"resources":      []any{map[string]any{"names": []any{"client"}, "compress": false}},
		}},
		"database": map[string]any{
			"name": "sqlite3",
			"args": map[string]any{"database": filepath.Join(dir, synapseDBFile)},
		},
		"media_store_path":         filepath.Join(dir, "media"),
		"signing_key_path":         filepath.Join(dir, synapseKeyFile),
		"app_service_config_files": appservices,
		// Users are created through shared-secret registration only.
		"enable_registration":        false,
		"registration_shared_secret": secret,
		// Cheap password hashing: tests register many users.
		"bcrypt_rounds": 4,
		// Nothing may leave the machine: no stats, no key servers, an empty
		// federation allow-list, no URL previews.
		"report_stats":                       false,
		"trusted_key_servers":                []any{},
		"suppress_key_server_warning":        true,
		"federation_domain_whitelist":        []any{},
		"allow_public_rooms_over_federation": false,
		"url_preview_enabled":                false,
		"enable_metrics":                     false,
		"presence":                           map[string]any{"enabled": false},
		// Phones send files up to 100 MiB; the default 50M would refuse them.
		"max_upload_size": fmt.Sprintf("%dM", mediaUploadLimit>>20),
		// Synapse logs to stderr (our log file) at INFO without log_config.
	}
	for _, k := range []string{
		"rc_message", "rc_registration", "rc_registration_token_validity", "rc_admin_redaction",
		"rc_joins_per_room", "rc_key_requests", "rc_3pid_validation", "rc_third_party_invite",
		"rc_media_create", "rc_delayed_event_mgmt", "rc_room_creation", "rc_reports",
		"rc_user_directory", "rc_profile",
	} {
		cfg[k] = unlimited
	}
	cfg["rc_login"] = map[string]any{"address": unlimited, "account": unlimited, "failed_attempts": unlimited}
	cfg["rc_joins"] = map[string]any{"local": unlimited, "remote": unlimited}
	cfg["rc_invites"] = map[string]any{"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited}
	cfg["rc_presence"] = map[string]any{"per_user": unlimited}

	out, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("testpeer: encode synapse config: %w", err)
	}
	// 0600: the file holds the registration shared secret.
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("testpeer: write synapse config: %w", err)
	}
	return nil
}
