package main

import (
	"encoding/json"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/execbackend"
)

func init() {
	backendOpeners[execbackend.Name] = func(env backendEnv, config json.RawMessage) (backend.Backend, error) {
		var cfg execbackend.Config
		if err := decodeBackendConfig(config, &cfg); err != nil {
			return nil, err
		}
		return execbackend.Open(env.Log, env.StateDir, cfg)
	}
}
