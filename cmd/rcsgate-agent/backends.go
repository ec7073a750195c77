package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
)

// backendOpener opens one backend. config is the backend's own JSON object
// from --backend-config (nil when none was given).
type backendOpener func(env backendEnv, config json.RawMessage) (backend.Backend, error)

// backendEnv is what the agent gives a backend when opening it.
type backendEnv struct {
	Log      zerolog.Logger
	StateDir string    // the agent's
	Stdin    io.Reader // the agent's own stdin and stdout (the stdio backend)
	Stdout   io.Writer
}

// backendOpeners holds every backend this build has; each backend_*.go file
// adds its own in init, so adding a backend touches no shared code.
var backendOpeners = map[string]backendOpener{}

func backendNames() string {
	names := make([]string, 0, len(backendOpeners))
	for n := range backendOpeners {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// loadBackendConfig reads the --backend-config file: a JSON object whose
// fields are the chosen backend's settings. It may hold secrets (webhook
// keys, passwords), so it must not be readable by others.
func loadBackendConfig(path string) (json.RawMessage, error) {
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("backend config: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("backend config %s is readable by others (mode %v); it may hold secrets: chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backend config: %w", err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("backend config %s is not valid JSON", path)
	}
	return b, nil
}

// decodeBackendConfig decodes raw into v, refusing unknown fields so a typo
// in a setting is an error, not a silently ignored line.
func decodeBackendConfig(raw json.RawMessage, v any) error {
	if raw == nil {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("backend config: %w", err)
	}
	return nil
}
