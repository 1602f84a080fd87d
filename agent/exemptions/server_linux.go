//go:build linux

package exemptions

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Serve answers control requests until ctx ends, then closes and removes
// the socket, waits for the requests in flight and returns nil. The socket
// is 0600 and only root (or the agent's own user) may ask: anyone else is
// disconnected unanswered.
func (s *ControlServer) Serve(ctx context.Context) error {
	if s.Handle == nil {
		return errors.New("exemptions: control socket: no handler")
	}
	ln, err := listenControl(s.Path)
	if err != nil {
		return fmt.Errorf("exemptions: control socket: %w", err)
	}
	log := s.logger()
	log.Info("exemption control socket listening", "path", s.Path)
	if s.OnListen != nil {
		s.OnListen()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	sem := make(chan struct{}, maxControlConns)
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
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ECONNABORTED) {
				log.Warn("control socket: accept", "err", err)
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("exemptions: control socket: accept: %w", err)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			uid, err := peerUID(conn)
			if err != nil || (uid != 0 && int(uid) != os.Geteuid()) {
				conn.Close()
				log.Warn("control socket: peer refused: only root may manage exemptions", "uid", uid, "err", err)
				return
			}
			if err := serveConn(ctx, conn, s.Handle); err != nil {
				log.Warn("control socket", "err", err)
			}
		})
	}
}

// listenControl creates the socket at path (0600), replacing a stale one.
func listenControl(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another agent", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The peer check, not the mode, decides who is answered; the mode
	// (and the 0700 state directory) keep others from connecting at all.
	// No umask dance: it is process-wide.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// peerUID is the uid of the process at the other end (SO_PEERCRED).
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}
