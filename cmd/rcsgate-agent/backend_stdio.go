package main

import (
	"encoding/json"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/execbackend"
)

func init() {
	backendOpeners[execbackend.StdioName] = func(env backendEnv, config json.RawMessage) (backend.Backend, error) {
		var cfg execbackend.StdioConfig
		if err := decodeBackendConfig(config, &cfg); err != nil {
			return nil, err
		}
		return execbackend.OpenStdio(env.Log, env.StateDir, env.Stdin, env.Stdout, cfg)
	}
}

// hostedBackend is a backend that speaks the exec protocol: it sends the
// program the agent's status and takes its network news.
type hostedBackend interface {
	SetHost(execbackend.Host)
}

// agentHost is the agent as the exec protocol's Host: its status, and the
// phone's network news applied to the resolver and the channel.
type agentHost struct {
	*agent.Agent
	dns *agent.Resolver
}

func (h agentHost) Network(dns []string) error {
	if dns != nil {
		if err := h.dns.SetServers(dns); err != nil {
			return err
		}
	}
	h.NetworkChanged()
	return nil
}
