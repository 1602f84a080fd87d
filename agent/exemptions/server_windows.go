package exemptions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/Microsoft/go-winio"
	"github.com/mnguard/mnguard/internal/unixsock"
)

// controlPipeSDDL lets only SYSTEM (the agent's service account) and the
// built-in Administrators open the pipe, and protects the list from
// inherited entries: on Windows the pipe's DACL is the peer check.
const controlPipeSDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)"

// Serve answers control requests on the named pipe s.Path until ctx ends,
// then closes the pipe, waits for the requests in flight and returns nil.
// Only SYSTEM and the Administrators may open the pipe.
func (s *ControlServer) Serve(ctx context.Context) error {
	if s.Handle == nil {
		return errors.New("exemptions: control pipe: no handler")
	}
	ln, err := winio.ListenPipe(s.Path, &winio.PipeConfig{SecurityDescriptor: controlPipeSDDL})
	if err != nil {
		return fmt.Errorf("exemptions: control pipe %s: %w", s.Path, err)
	}
	log := s.logger()
	log.Info("exemption control pipe listening", "path", s.Path)
	if s.OnListen != nil {
		s.OnListen()
	}
	err = unixsock.Serve(ctx, ln, maxControlConns, func(err error, retry time.Duration) {
		log.Warn("control pipe: accept", "err", err, "retry_in", retry)
	}, func(conn net.Conn) {
		if err := serveConn(ctx, conn, s.Handle); err != nil {
			log.Warn("control pipe", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("exemptions: control pipe: %w", err)
	}
	return nil
}
