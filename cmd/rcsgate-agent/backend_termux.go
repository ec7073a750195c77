package main

import (
	"encoding/json"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/termux"
)

func init() {
	backendOpeners[termux.Name] = func(log zerolog.Logger, stateDir string, config json.RawMessage) (backend.Backend, error) {
		var cfg termux.Config
		if err := decodeBackendConfig(config, &cfg); err != nil {
			return nil, err
		}
		return termux.Open(log, stateDir, cfg)
	}
}
