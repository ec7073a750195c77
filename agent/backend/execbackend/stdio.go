package execbackend

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
)

// StdioName is the stdio backend's name.
const StdioName = "stdio"

// StdioConfig is the stdio backend's --backend-config object (optional).
type StdioConfig struct {
	// SendTimeout bounds a send's wait for its result (default 60s).
	SendTimeout Duration `json:"send_timeout,omitempty"`
	// HelloTimeout bounds the wait for the program's hello (default 30s).
	HelloTimeout Duration `json:"hello_timeout,omitempty"`
}

// Stdio is the exec protocol the other way round: the program that reaches
// the phone network runs the agent (the Android app does) and speaks the
// protocol on the agent's stdin and stdout. Same lines, same rules; no
// restarts: when the program closes the agent's stdin, Done is closed and
// the agent stops. Logs must not go to stdout.
type Stdio struct {
	engine
	in           io.Reader
	out          io.Writer
	helloTimeout time.Duration
	done         chan struct{}
}

var _ backend.Backend = (*Stdio)(nil)

// OpenStdio prepares the backend over in (the program's lines) and out.
func OpenStdio(log zerolog.Logger, stateDir string, in io.Reader, out io.Writer, cfg StdioConfig) (*Stdio, error) {
	if cfg.SendTimeout < 0 || cfg.HelloTimeout < 0 {
		return nil, errors.New("stdio: negative timeout in config")
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = Duration(DefaultSendTimeout)
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = Duration(DefaultHelloTimeout)
	}
	dir, err := programDir(stateDir)
	if err != nil {
		return nil, err
	}
	return &Stdio{
		engine:       newEngine(log.With().Str("backend", StdioName).Logger(), dir, time.Duration(cfg.SendTimeout)),
		in:           in,
		out:          out,
		helloTimeout: time.Duration(cfg.HelloTimeout),
		done:         make(chan struct{}),
	}, nil
}

func (s *Stdio) Name() string { return StdioName }

// Start waits for the program's hello on stdin and answers it; an error
// says why there was none.
func (s *Stdio) Start(ctx context.Context, sink backend.Sink) error {
	ctx, err := s.begin(ctx, sink)
	if err != nil {
		return err
	}
	p := newPeer(s.out, s.log, nil, nil)
	if err := s.connect(ctx, p, s.in, s.helloTimeout); err != nil {
		s.cancel()
		<-s.delivered
		return err
	}
	s.setUp(p)
	go func() {
		<-p.ended
		s.setDown(p)
		close(s.done)
	}()
	return nil
}

// Done is closed once the program closed the agent's stdin (or its line
// broke the protocol): the agent should stop.
func (s *Stdio) Done() <-chan struct{} { return s.done }

// Close stops taking lines. The reader of stdin is left to the process's
// exit.
func (s *Stdio) Close() error {
	_, stop := s.shut()
	stop()
	return nil
}
