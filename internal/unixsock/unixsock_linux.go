package unixsock

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Listen listens on a unix socket at path with the given mode. A socket
// left by an earlier run is removed; one another process still serves, or
// a file that is not a socket, is an error. The socket is removed when the
// listener is closed.
func Listen(path string, mode fs.FileMode) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The mode is set after bind rather than with umask, which is
	// process-wide.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// SetBacklog shortens the listen queue of ln (connections the kernel has
// completed and Accept has not yet taken) to n; Go listens with the
// system's maximum (net.core.somaxconn, 4096). On a socket others may
// flood, a privileged client's connection queues behind at most n of
// theirs; while the queue is full, a blocking connect waits (woken as
// connections are accepted) and a non-blocking one fails with EAGAIN.
func SetBacklog(ln *net.UnixListener, n int) error {
	raw, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("listen backlog: %w", err)
	}
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), n) }); err != nil {
		return fmt.Errorf("listen backlog: %w", err)
	}
	if lerr != nil {
		return fmt.Errorf("listen backlog %d: %w", n, lerr)
	}
	return nil
}

// PeerUID returns the uid of the process at the other end of conn
// (SO_PEERCRED: the credentials it had when it connected).
func PeerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred.Uid, nil
}
