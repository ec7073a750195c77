package main

import (
	"encoding/json"
	"errors"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/smsgateway"
)

func init() {
	backendOpeners[smsgateway.Name] = openSMSGateway
}

// openSMSGateway opens the SMS Gateway for Android backend; its settings
// (docs/backends/smsgateway.md) come from --backend-config.
func openSMSGateway(env backendEnv, config json.RawMessage) (backend.Backend, error) {
	if config == nil {
		return nil, errors.New("backend smsgateway needs --backend-config (see docs/backends/smsgateway.md)")
	}
	var cfg smsgateway.Config
	if err := decodeBackendConfig(config, &cfg); err != nil {
		return nil, err
	}
	return smsgateway.Open(env.Log, env.StateDir, cfg)
}
