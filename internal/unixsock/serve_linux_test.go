package unixsock

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func serveTest(t *testing.T, maxConns int, onBusy func(error, time.Duration), handle func(net.Conn)) (path string, cancel func() error) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, maxConns, onBusy, handle) }()
	var ended bool
	var res error
	cancel = func() error {
		if !ended {
			stop()
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
			ended = true
		}
		return res
	}
	t.Cleanup(func() { cancel() })
	return path, cancel
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestServeLimitsConnections: no more than maxConns handlers at once; the
// next client is served when one ends.
func TestServeLimitsConnections(t *testing.T) {
	var running, most atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	path, _ := serveTest(t, 2, nil, func(c net.Conn) {
		defer c.Close()
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		started <- struct{}{}
		<-release
		c.Write([]byte("x"))
	})
	var clients []net.Conn
	for range 3 {
		clients = append(clients, dial(t, path))
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the first two clients were not served")
		}
	}
	select {
	case <-started:
		t.Fatal("a third handler ran with maxConns 2")
	case <-time.After(200 * time.Millisecond):
	}
	release <- struct{}{} // one handler ends: the third client is served
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the third client was not served after one ended")
	}
	close(release)
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Errorf("client read: %v", err)
		}
	}
	if m := most.Load(); m != 2 {
		t.Errorf("at most %d handlers ran at once, want 2", m)
	}
}

// TestServeCancelWaitsForHandlers: Serve returns nil only once the
// handlers in flight have finished, and the socket is gone.
func TestServeCancelWaitsForHandlers(t *testing.T) {
	inHandler := make(chan struct{})
	var finished atomic.Bool
	path, cancel := serveTest(t, 4, nil, func(c net.Conn) {
		defer c.Close()
		close(inHandler)
		time.Sleep(300 * time.Millisecond)
		finished.Store(true)
	})
	dial(t, path)
	<-inHandler
	if err := cancel(); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if !finished.Load() {
		t.Error("Serve returned before the handler in flight finished")
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Serve returned: %v", err)
	}
}

// TestServeOutOfDescriptors: with no file descriptor left, accept fails
// with EMFILE; Serve reports it, backs off and serves the client once
// descriptors are free again.
func TestServeOutOfDescriptors(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	busy := make(chan error, 100)
	served := make(chan struct{}, 1)
	path, cancel := serveTest(t, 4, func(err error, retry time.Duration) {
		if retry < 5*time.Millisecond || retry > time.Second {
			t.Errorf("retry in %v", retry)
		}
		select {
		case busy <- err:
		default:
		}
	}, func(c net.Conn) {
		c.Close()
		served <- struct{}{}
	})
	c := dial(t, path)
	<-served
	c.Close()

	// Use up the descriptors but one, which the dial takes: the accept
	// cannot have one. Another goroutine of the test binary closing a
	// descriptor in between would let it through: then try again.
	low := lim
	low.Cur = uint64(openFDs(t) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}()
	for try := 1; ; try++ {
		var fill []*os.File
		for {
			f, err := os.Open("/dev/null")
			if err != nil {
				if !errors.Is(err, syscall.EMFILE) {
					t.Fatal(err)
				}
				break
			}
			fill = append(fill, f)
		}
		if len(fill) == 0 {
			t.Fatal("no descriptor could be opened")
		}
		fill[len(fill)-1].Close()
		fill = fill[:len(fill)-1]
		c2, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial with one descriptor left: %v", err)
		}
		var gotBusy error
		select {
		case gotBusy = <-busy:
		case <-served:
		case <-time.After(5 * time.Second):
		}
		for _, f := range fill {
			f.Close()
		}
		if gotBusy == nil {
			c2.Close()
			if try == 5 {
				t.Fatal("onBusy not called while out of descriptors (5 tries)")
			}
			continue
		}
		if !errors.Is(gotBusy, syscall.EMFILE) {
			t.Errorf("onBusy(%v), want EMFILE", gotBusy)
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("the client was not served once descriptors were free")
		}
		c2.Close()
		break
	}
	if err := cancel(); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory's own descriptor
}

// TestServeBadLimit: a limit below one is an error, not a hang.
func TestServeBadLimit(t *testing.T) {
	ln, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Serve(context.Background(), ln, 0, nil, func(c net.Conn) { c.Close() }); err == nil {
		t.Error("Serve with maxConns 0 = nil")
	}
}
