package main

import (
	"encoding/json"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/termux"
)

func init() {
	backendOpeners[termux.Name] = func(env backendEnv, config json.RawMessage) (backend.Backend, error) {
		var cfg termux.Config
		if err := decodeBackendConfig(config, &cfg); err != nil {
			return nil, err
		}
		return termux.Open(env.Log, env.StateDir, cfg)
	}
}
