package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// netnsSeq makes namespace names unique within a test run; the PID across
// runs.
var netnsSeq atomic.Int64

// netns is a network namespace the test created ('ip netns add'), deleted
// when the test ends.
type netns struct {
	name string
}

// newNetns creates a network namespace named after role, with loopback up.
func newNetns(t testing.TB, role string) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("mng%d-%d-%s", os.Getpid(), netnsSeq.Add(1), role)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	// Registered before the processes' cleanups, so it runs after them:
	// the namespace goes once nothing runs in it.
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs 'ip -n NS ARGS' and fails the test when it fails.
func (n *netns) ip(t testing.TB, args ...string) string {
	t.Helper()
	return n.exec(t, "ip", args...)
}

// exec runs a program inside the namespace and fails the test when it
// fails.
func (n *netns) exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.try(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// try runs a program inside the namespace.
func (n *netns) try(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip netns exec %s %s %s: %v: %s", n.name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// veth links namespaces a and b with a veth pair, aIf in a and bIf in b,
// both up. The pair is created inside a, so that no name is ever taken in
// the test's own namespace; it goes with the namespaces.
func veth(t testing.TB, a *netns, aIf string, b *netns, bIf string) {
	t.Helper()
	a.ip(t, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name)
	a.ip(t, "link", "set", aIf, "up")
	b.ip(t, "link", "set", bIf, "up")
}

// inNetnsDo runs f on an OS thread moved into namespace ns. Sockets f
// creates belong to ns for their lifetime; the thread is never reused
// (it exits with the goroutine, still locked).
func inNetnsDo(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// netnsDialer dials from inside namespace ns; nil for "" (the test's own).
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if ns == "" {
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetnsDo(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// peerListener is a TCP listener in a peer namespace that accepts and
// holds connections until closeConns.
type peerListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// closeConns closes the connections accepted so far: the peer ends them
// first, so that the terminal's side does not linger in TIME_WAIT.
func (p *peerListener) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// listenIn listens inside namespace ns and accepts; the listener and its
// connections are closed when the test ends.
func listenIn(t testing.TB, ns *netns, network, addr string) *peerListener {
	t.Helper()
	p := &peerListener{}
	if err := inNetnsDo(ns.name, func() error {
		var err error
		p.Listener, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.name, err)
	}
	go func() {
		for {
			c, err := p.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.Close(); p.closeConns() })
	return p
}
