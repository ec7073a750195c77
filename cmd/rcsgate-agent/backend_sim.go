package main

import (
	"encoding/json"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
)

func init() {
	backendOpeners[sim.Name] = func(env backendEnv, config json.RawMessage) (backend.Backend, error) {
		var none struct{}
		if err := decodeBackendConfig(config, &none); err != nil {
			return nil, err
		}
		return sim.Open(env.Log, env.StateDir)
	}
}
