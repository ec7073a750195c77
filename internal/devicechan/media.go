package devicechan

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// ErrNotConnected is returned when an operation needs the device online.
var ErrNotConnected = errors.New("device is not connected")

func (s *Server) session(deviceID string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[deviceID]
}

// FetchMedia pulls the bytes of a phone message's file from the device on a
// stream of its own and writes them to dst (checked against want, the hash
// the message announced). onHeader sees the size before any byte arrives.
func (s *Server) FetchMedia(ctx context.Context, deviceID, msgID, want string, dst io.Writer, onHeader func(wire.MediaHeader) error) (wire.MediaHeader, error) {
	ms, err := s.StreamMedia(ctx, deviceID, msgID, want, 0)
	if err != nil {
		return ms.Header(), err
	}
	defer ms.Close()
	if onHeader != nil {
		if err := onHeader(ms.Header()); err != nil {
			return ms.Header(), err
		}
	}
	_, err = ms.WriteTo(dst)
	return ms.Header(), err
}

// StreamMedia asks the device for a phone message's file on a stream of its
// own and returns once the header is in: the caller reads the bytes as they
// arrive (checked against want; the last holdback bytes only once the
// whole file checked out, see wire.MediaReader) and closes the stream.
func (s *Server) StreamMedia(ctx context.Context, deviceID, msgID, want string, holdback int) (wire.MediaStream, error) {
	empty := wire.NewMediaStream(&wire.MediaReader{}, nil)
	sess := s.session(deviceID)
	if sess == nil {
		return empty, ErrNotConnected
	}
	str, err := sess.conn.OpenStreamSync(ctx)
	if err != nil {
		return empty, fmt.Errorf("open media stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { str.CancelRead(1); str.CancelWrite(1) })
	r, err := wire.OpenMediaStream(str, msgID, 0, want, wire.MaxMediaSize, holdback)
	closeStream := func() {
		stop()
		if !r.Checked() { // given up early: the device stops sending
			str.CancelRead(1)
		}
		_ = str.Close()
	}
	if err != nil {
		closeStream()
		return wire.NewMediaStream(r, nil), err
	}
	return wire.NewMediaStream(r, closeStream), nil
}

// SendTyping tells a connected device that a Matrix user is (or stopped)
// typing; nothing happens when it is offline (typing goes stale by the time
// it is back, so that is not an error).
func (s *Server) SendTyping(deviceID, chat string, active bool) error {
	sess := s.session(deviceID)
	if sess == nil {
		return nil
	}
	return sess.write(wire.Typing{Chat: chat, Active: active})
}

// Caps is what the device's backend said it can carry, per transport, and
// its SIM slots; ok is false while the device is offline.
func (s *Server) Caps(deviceID string) (caps map[string]wire.Caps, sims []int, ok bool) {
	sess := s.session(deviceID)
	if sess == nil {
		return nil, nil, false
	}
	return sess.hello.Caps, sess.hello.SIMs, true
}
