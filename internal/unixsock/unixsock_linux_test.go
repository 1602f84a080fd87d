package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		uid, err := PeerUID(c)
		if err != nil || int(uid) != os.Geteuid() {
			t.Errorf("PeerUID = %d, %v; want %d", uid, err, os.Geteuid())
		}
		c.Close()
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	c.Read(buf) // until the server closes
	c.Close()
	// Served: a second listener is refused.
	if _, err := Listen(path, 0o600); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Listen: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}

	// A stale socket (its server gone without unlinking) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen(path, 0o666)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()

	// A file that is not a socket is never removed.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := Listen(file, 0o600); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file removed: %v", err)
	}
}

// TestSetBacklog: with a queue of n, connections nobody accepts queue up to
// about n; one more non-blocking connect fails with EAGAIN.
func TestSetBacklog(t *testing.T) {
	ln, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := SetBacklog(ln, 4); err != nil {
		t.Fatal(err)
	}
	queued := 0
	for ; queued < 100; queued++ {
		c, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("connection %d: %v, want EAGAIN", queued+1, err)
			}
			break
		}
		defer c.Close()
	}
	if queued < 4 || queued > 5 {
		t.Errorf("%d connections queued with a backlog of 4", queued)
	}
}
