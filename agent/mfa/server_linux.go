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
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/unixsock"
	"golang.org/x/sys/unix"
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

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()

	sem := make(chan struct{}, s.maxConns())
	var delay time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := ln.AcceptUnix()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			// Out of file descriptors and the like: back off as net/http does.
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) ||
				errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("mfa: accept", "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("mfa.Serve: accept on %s: %w", path, err)
		}
		delay = 0
		wg.Go(func() {
			defer func() { <-sem }()
			uid, err := unixsock.PeerUID(conn)
			if err != nil {
				conn.Close()
				log.Warn("mfa: peer credentials", "err", err)
				return
			}
			s.serveConn(ctx, conn, uid)
		})
	}
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
	return unixsock.Listen(path, 0o666)
}
