package exemptions

import (
	"context"
	"log/slog"
)

// ControlServer serves the control socket (see Request) for the running
// agent.
type ControlServer struct {
	// Path of the unix socket or (Windows) the named pipe, normally
	// ControlAddress(state directory).
	Path string
	// Handle answers requests that pass the peer check; usually
	// Manager.Handle.
	Handle func(ctx context.Context, r Request) Response
	Logger *slog.Logger
	// OnListen, if set, is called once the socket accepts connections.
	OnListen func()
}

// maxControlConns is how many control connections are served at once.
const maxControlConns = 8

func (s *ControlServer) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
