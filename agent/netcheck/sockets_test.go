//go:build linux

package netcheck

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gnet "github.com/shirou/gopsutil/v3/net"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// checkSelf checks that s is this test process's: its PID, its name as the
// kernel keeps it (comm, 15 bytes) or in full, and its user.
func checkSelf(t *testing.T, s Socket) {
	t.Helper()
	if s.PID != int32(os.Getpid()) {
		t.Errorf("%+v: pid %d, want %d", s, s.PID, os.Getpid())
	}
	base := filepath.Base(os.Args[0])
	if s.Process == "" || !strings.HasPrefix(base, s.Process) {
		t.Errorf("%+v: process %q, want (a prefix of) %q", s, s.Process, base)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if s.User != u.Username {
		t.Errorf("%+v: user %q, want %q", s, s.User, u.Username)
	}
}

func findSocket(socks []Socket, f func(Socket) bool) (Socket, bool) {
	for _, s := range socks {
		if f(s) {
			return s, true
		}
	}
	return Socket{}, false
}

func TestSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnAddr := netip.MustParseAddrPort(ln.Addr().String())
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:9")))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uLocal := netip.MustParseAddrPort(u.LocalAddr().String())
	var ln6 net.Listener
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln6 = l
		defer l.Close()
	}

	h, err := openDiag(netns.None())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for name, list := range map[string]func(context.Context) ([]Socket, error){
		"gopsutil":  listSockets,
		"sock_diag": func(ctx context.Context) ([]Socket, error) { return diagSockets(ctx, h) },
	} {
		t.Run(name, func(t *testing.T) {
			socks, err := list(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkSockets(t, socks, lnAddr, local, uLocal, ln6)
		})
	}
}

func checkSockets(t *testing.T, socks []Socket, lnAddr, local, uLocal netip.AddrPort, ln6 net.Listener) {
	s, ok := findSocket(socks, func(s Socket) bool { return s.Proto == "tcp" && s.Local == lnAddr && s.State == "LISTEN" })
	if !ok {
		t.Fatalf("listener %s not found", lnAddr)
	}
	if s.Remote.IsValid() {
		t.Errorf("listener with a remote: %+v", s)
	}
	checkSelf(t, s)
	s, ok = findSocket(socks, func(s Socket) bool { return s.Proto == "tcp" && s.Local == local })
	if !ok {
		t.Fatalf("connection from %s not found", local)
	}
	if s.Remote != lnAddr || s.State != "ESTABLISHED" {
		t.Errorf("connection %+v, want remote %s ESTABLISHED", s, lnAddr)
	}
	checkSelf(t, s)
	s, ok = findSocket(socks, func(s Socket) bool { return s.Proto == "udp" && s.Local == uLocal })
	if !ok {
		t.Fatalf("udp socket %s not found", uLocal)
	}
	if s.Remote != netip.MustParseAddrPort("127.0.0.2:9") {
		t.Errorf("udp %+v, want remote 127.0.0.2:9", s)
	}
	checkSelf(t, s)
	if ln6 != nil {
		a := netip.MustParseAddrPort(ln6.Addr().String())
		s, ok = findSocket(socks, func(s Socket) bool { return s.Proto == "tcp" && s.Local == a })
		if !ok || s.State != "LISTEN" {
			t.Errorf("ipv6 listener %s: %+v %v", a, s, ok)
		}
	}
}

// TestSocketOfExitedProcess: a child process holds a listening socket
// when the sockets are listed and is gone when its name is looked up. The
// socket stays, its process and user empty, and nothing fails; through
// gopsutil's listing and through sock_diag.
func TestSocketOfExitedProcess(t *testing.T) {
	h, err := openDiag(netns.None())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	t.Run("gopsutil", func(t *testing.T) {
		exitBeforeLookup(t, func() ([]Socket, error) {
			conns, err := gnet.ConnectionsWithoutUidsWithContext(context.Background(), "inet")
			if err != nil {
				return nil, err
			}
			var out []Socket
			for _, c := range conns {
				if s, ok := socketFrom(c); ok {
					out = append(out, s)
				}
			}
			return out, nil
		})
	})
	t.Run("sock_diag", func(t *testing.T) {
		exitBeforeLookup(t, func() ([]Socket, error) { return diagList(context.Background(), h) })
	})
}

// exitBeforeLookup lists sockets (unnamed) with list until a child's
// listener shows up with its PID, ends the child, then names them.
func exitBeforeLookup(t *testing.T, list func() ([]Socket, error)) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // only the child holds the socket now
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := int32(cmd.Process.Pid)

	var socks []Socket
	deadline := time.Now().Add(5 * time.Second)
	for {
		socks, err = list()
		if err != nil {
			t.Fatal(err)
		}
		if _, held := findSocket(socks, func(s Socket) bool { return s.Local == addr && s.PID == pid }); held {
			break
		}
		if time.Now().After(deadline) {
			var seen []Socket
			for _, s := range socks {
				if s.Local.Port() == addr.Port() {
					seen = append(seen, s)
				}
			}
			self, _ := os.Readlink("/proc/self/ns/net")
			init, _ := os.Readlink("/proc/1/ns/net")
			t.Fatalf("the child's socket %s was never listed with pid %d: %d sockets, on its port %+v; main thread in %s, init in %s", addr, pid, len(socks), seen, self, init)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Before the lookup: the child is named.
	if p := (procCache{}).lookup(context.Background(), pid); p.name != "sleep" {
		t.Fatalf("child process name %q, want sleep", p.name)
	}
	// The child exits (and is reaped) between the listing and the lookup.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	if err := nameProcesses(context.Background(), socks); err != nil {
		t.Fatal(err)
	}
	s, ok := findSocket(socks, func(s Socket) bool { return s.Local == addr })
	if !ok {
		t.Fatalf("the exited child's socket %s is missing", addr)
	}
	if s.PID != pid || s.Process != "" || s.User != "" || s.State != "LISTEN" {
		t.Fatalf("socket of the exited child: %+v, want pid %d, no process or user", s, pid)
	}
	// Another socket of the same listing is still named.
	if s, ok := findSocket(socks, func(s Socket) bool { return s.PID == int32(os.Getpid()) }); ok && s.Process == "" {
		t.Errorf("this process's socket lost its name: %+v", s)
	}
}

func TestSocketFrom(t *testing.T) {
	cases := []struct {
		in   gnet.ConnectionStat
		want Socket
		ok   bool
	}{
		{gnet.ConnectionStat{Type: sockStream, Laddr: gnet.Addr{IP: "0.0.0.0", Port: 22}, Raddr: gnet.Addr{IP: "0.0.0.0"}, Status: "LISTEN", Pid: 1},
			Socket{Proto: "tcp", Local: netip.MustParseAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 1}, true},
		{gnet.ConnectionStat{Type: sockStream, Laddr: gnet.Addr{IP: "::ffff:198.51.100.1", Port: 40000}, Raddr: gnet.Addr{IP: "::ffff:203.0.113.9", Port: 443}, Status: "SYN_SENT"},
			Socket{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.1:40000"), Remote: netip.MustParseAddrPort("203.0.113.9:443"), State: "SYN_SENT"}, true},
		{gnet.ConnectionStat{Type: sockDgram, Laddr: gnet.Addr{IP: "::", Port: 53}, Raddr: gnet.Addr{}, Status: "NONE"},
			Socket{Proto: "udp", Local: netip.MustParseAddrPort("[::]:53"), State: "NONE"}, true},
		{gnet.ConnectionStat{Type: 5, Laddr: gnet.Addr{IP: "::", Port: 53}}, Socket{}, false},
		{gnet.ConnectionStat{Type: sockStream, Laddr: gnet.Addr{IP: "bogus", Port: 1}}, Socket{}, false},
		{gnet.ConnectionStat{Type: sockStream, Laddr: gnet.Addr{IP: "10.0.0.1", Port: 70000}}, Socket{}, false},
	}
	for _, c := range cases {
		got, ok := socketFrom(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("%+v: %+v %v, want %+v %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestSocketInode(t *testing.T) {
	cases := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[4294967297]", 1, true}, // the low 32 bits, as sock_diag has it
		{"socket:[]", 0, false},
		{"socket:[12a]", 0, false},
		{"socket:[12", 0, false},
		{"pipe:[12345]", 0, false},
		{"/dev/null", 0, false},
		{"socket:[99999999999999999999999]", 0, false},
	}
	for _, c := range cases {
		got, ok := socketInode([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("%q: %d %v, want %d %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestParseDiagMsg(t *testing.T) {
	msg := func(family byte, src, dst []byte, sport, dport uint16, inode uint32) []byte {
		b := make([]byte, sizeofDiagMsg+8) // and an attribute after it
		b[0], b[1] = family, 10
		binary.BigEndian.PutUint16(b[4:], sport)
		binary.BigEndian.PutUint16(b[6:], dport)
		copy(b[8:], src)
		copy(b[24:], dst)
		binary.NativeEndian.PutUint32(b[68:], inode)
		return b
	}
	v4 := msg(unix.AF_INET, []byte{198, 51, 100, 1}, []byte{203, 0, 113, 9}, 40000, 443, 777)
	m, err := parseDiagMsg(v4)
	if err != nil || m.local != netip.MustParseAddrPort("198.51.100.1:40000") || m.remote != netip.MustParseAddrPort("203.0.113.9:443") || m.inode != 777 || m.state != 10 {
		t.Errorf("v4: %+v %v", m, err)
	}
	mapped := netip.MustParseAddr("::ffff:192.0.2.7").As16()
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	m, err = parseDiagMsg(msg(unix.AF_INET6, mapped[:], v6[:], 53, 0, 1))
	if err != nil || m.local != netip.MustParseAddrPort("192.0.2.7:53") || m.remote != netip.MustParseAddrPort("[2001:db8::1]:0") {
		t.Errorf("v6: %+v %v", m, err)
	}
	if _, err := parseDiagMsg(v4[:sizeofDiagMsg-1]); err == nil {
		t.Error("short message parsed")
	}
	if _, err := parseDiagMsg(msg(unix.AF_UNIX, nil, nil, 0, 0, 0)); err == nil {
		t.Error("unix family parsed")
	}
}

// FuzzParseDiagMsg: any kernel message decodes or is refused, never a
// panic; a decoded one has valid addresses of its family.
func FuzzParseDiagMsg(f *testing.F) {
	f.Add(make([]byte, sizeofDiagMsg))
	b := make([]byte, sizeofDiagMsg)
	b[0] = unix.AF_INET6
	f.Add(b)
	f.Add([]byte{unix.AF_INET, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDiagMsg(b)
		if err != nil {
			return
		}
		if !m.local.Addr().IsValid() || !m.remote.Addr().IsValid() || m.local.Addr().Is4In6() {
			t.Fatalf("%+v", m)
		}
		if b[0] == unix.AF_INET && !m.local.Addr().Is4() {
			t.Fatalf("AF_INET decoded as %v", m.local)
		}
	})
}
