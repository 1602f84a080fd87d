//go:build linux

package exemptions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mnguard/mnguard/internal/unixsock"
)

// Serve answers control requests until ctx ends, then closes and removes
// the socket, waits for the requests in flight and returns nil. The socket
// is 0600 and only root (or the agent's own user) may ask: anyone else is
// disconnected unanswered at once. A client has controlRequestTimeout for
// its request to arrive.
func (s *ControlServer) Serve(ctx context.Context) error {
	if s.Handle == nil {
		return errors.New("exemptions: control socket: no handler")
	}
	// The peer check, not the mode, decides who is answered; the mode
	// (and the 0700 state directory) keep others from connecting at all.
	ln, err := unixsock.Listen(s.Path, 0o600)
	if err != nil {
		return fmt.Errorf("exemptions: control socket: %w", err)
	}
	log := s.logger()
	log.Info("exemption control socket listening", "path", s.Path)
	if s.OnListen != nil {
		s.OnListen()
	}
	// Root and the agent's own uid have the slots; anyone else is closed
	// in the accept loop, before taking one.
	lim := unixsock.PeerLimits{
		Privileged:   maxControlConns,
		IsPrivileged: func(uid uint32) bool { return int(uid) == os.Geteuid() },
		OnRefused: func(uid uint32, n int) {
			log.Warn("control socket: peer refused: only root may manage exemptions", "uid", uid, "refused", n)
		},
	}
	err = unixsock.ServePeers(ctx, ln, lim, func(err error, retry time.Duration) {
		log.Warn("control socket: accept", "err", err, "retry_in", retry)
	}, func(conn *net.UnixConn, _ uint32) {
		if err := serveConn(ctx, conn, s.Handle); err != nil {
			log.Warn("control socket", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("exemptions: control socket: %w", err)
	}
	return nil
}
