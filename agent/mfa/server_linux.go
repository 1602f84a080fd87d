//go:build linux

package mfa

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mnguard/mnguard/internal/unixsock"
)

// Serve listens on the socket and answers requests until ctx is cancelled. It creates
// the socket's directory (0755) if missing and replaces a stale socket; the socket is
// mode 0666 because the peer's credentials, not the file mode, decide who may ask what.
// When ctx ends Serve closes and removes the socket, waits for the connections in
// flight and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	if s.Verifier == nil {
		return errors.New("mfa.Serve: no Verifier")
	}
	path := s.path()
	ln, err := listen(path)
	if err != nil {
		return fmt.Errorf("mfa.Serve: %w", err)
	}
	log := s.logger()
	log.Info("mfa: listening", "path", path)
	if s.OnListen != nil {
		s.OnListen()
	}

	lim := unixsock.PeerLimits{
		Privileged: orDefault(s.MaxConns, DefaultMaxConns),
		PerUID:     orDefault(s.MaxConnsPerUID, DefaultMaxConnsPerUID),
		Users:      orDefault(s.MaxUserConns, DefaultMaxUserConns),
		OnRefused: func(uid uint32, n int) {
			if uid == unixsock.NoUID {
				log.Warn("mfa: connections refused: no peer credentials", "refused", n)
				return
			}
			log.Warn("mfa: connections refused: too many at once from this uid or from users", "peer_uid", uid, "refused", n)
		},
	}
	err = unixsock.ServePeers(ctx, ln, lim, func(err error, retry time.Duration) {
		log.Warn("mfa: accept", "err", err, "retry_in", retry)
	}, func(conn *net.UnixConn, uid uint32) {
		s.serveConn(ctx, conn, uid)
	})
	if err != nil {
		return fmt.Errorf("mfa.Serve: %w", err)
	}
	return nil
}

// listen creates the unix socket at path (0666: the peer check decides who
// is answered), making its directory and removing a stale socket left by an
// earlier run.
func listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	ln, err := unixsock.Listen(path, 0o666)
	if err != nil {
		return nil, err
	}
	if err := unixsock.SetBacklog(ln, listenBacklog); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// listenBacklog is the socket's listen queue. Anyone may connect, as fast
// as they can: with the system's 4,096 a root login queued behind a local
// user's flood of connections for a quarter of a second (each accepted and
// closed in turn); with 64 it waits a few milliseconds. pam_mnguard.so's
// blocking connect waits while the queue is full.
const listenBacklog = 64
