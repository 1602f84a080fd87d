//go:build linux

package nft

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mnguard/mnguard/internal/testenv"
)

// requireTools makes sure the test can build namespaces: root, ip(8) and
// nft(8) (nft only to look from the outside; the package never runs it).
// A missing nft is installed from Debian; under CI nothing skips.
func requireTools(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces and nftables")
	if _, err := exec.LookPath("ip"); err != nil {
		fail(t, "ip not found (apt-get install iproute2)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		installNft.Do(func() {
			out, err := exec.Command("apt-get", "install", "-y", "-q", "nftables").CombinedOutput()
			if err != nil {
				t.Logf("apt-get install nftables: %v\n%s", err, out)
			}
		})
		if _, err := exec.LookPath("nft"); err != nil {
			fail(t, "nft not found and apt-get install nftables failed")
		}
	}
}

var installNft sync.Once

func fail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// netns is a network namespace the test made; it is deleted at cleanup.
type netns struct {
	name string
	fd   int // open while the test runs
}

func newNetns(t testing.TB, role string) *netns {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("mngnft-%s-%s", role, hex.EncodeToString(b))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	n := &netns{name: name, fd: int(f.Fd())}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *netns) ip(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", n.name}, args...)...)
}

func (n *netns) nft(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.name, "nft"}, args...)...)
}

// veth links a (interface aIf) and b (bIf), with addresses, and brings
// both ends up. IPv6 addresses skip duplicate address detection.
func veth(t testing.TB, a *netns, aIf string, aAddrs []string, b *netns, bIf string, bAddrs []string) {
	t.Helper()
	run(t, "ip", "link", "add", aIf, "netns", a.name, "type", "veth", "peer", "name", bIf, "netns", b.name)
	for _, s := range []struct {
		ns    *netns
		ifc   string
		addrs []string
	}{{a, aIf, aAddrs}, {b, bIf, bAddrs}} {
		for _, addr := range s.addrs {
			args := []string{"addr", "add", addr, "dev", s.ifc}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			s.ns.ip(t, args...)
		}
		s.ns.ip(t, "link", "set", s.ifc, "up")
	}
}

// in runs fn on an OS thread switched into n, so that sockets fn makes
// live there (a socket keeps its namespace).
func (n *netns) in(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n.name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// echo serves TCP echo on port in n on every address, and UDP echo on
// each of udpHosts (one socket each, so that a reply leaves from the
// address asked; "" is every address).
func echo(t testing.TB, n *netns, port int, udpHosts ...string) {
	t.Helper()
	if len(udpHosts) == 0 {
		udpHosts = []string{""}
	}
	var ln net.Listener
	var pcs []net.PacketConn
	err := n.in(func() (err error) {
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		for _, h := range udpHosts {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(h, fmt.Sprint(port)))
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", n.name, err)
	}
	t.Cleanup(func() {
		ln.Close()
		for _, pc := range pcs {
			pc.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	for _, pc := range pcs {
		go func() {
			buf := make([]byte, 1500)
			for {
				k, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:k], addr)
			}
		}()
	}
}

// dial connects from n to addr ("tcp" or "udp" network).
func (n *netns) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.in(func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// roundTrip sends a line over c and waits for its echo.
func roundTrip(c net.Conn, timeout time.Duration) error {
	msg := []byte("mnguard " + c.LocalAddr().String() + "\n")
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// reach says whether n gets an echo from addr within timeout.
func (n *netns) reach(network, addr string, timeout time.Duration) error {
	c, err := n.dial(network, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(c, timeout)
}
