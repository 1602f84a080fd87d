//go:build linux

package netcheck

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// These tests run the platform in network namespaces they create (as
// root, through netlink: no ip(8) needed); the namespaces are anonymous
// and go with their last handle.

// init keeps the main goroutine on Go's main thread for the whole test
// binary. A goroutine that ends locked to a thread in a namespace takes
// the thread with it, except the main thread, which Go keeps, still in the
// namespace: /proc/self/net (gopsutil's sockets) would then show that
// namespace. With the main thread held here, no test goroutine runs on it.
func init() { runtime.LockOSThread() }

// newNS creates an empty network namespace.
func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root")
		}
		t.Skip("network namespaces need root")
	}
	var ns netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err0 := netns.Get()
		if err0 != nil {
			err = err0
			return // still locked: the thread ends with the goroutine
		}
		defer orig.Close()
		ns, err = netns.New()
		back(orig)
	}()
	<-done
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// back returns the locked thread to orig and unlocks it. When it cannot,
// the thread stays locked and ends with its goroutine - except Go's main
// thread, which is kept: it must never be left in a test's namespace
// (/proc/self/net is the main thread's), hence the way back.
func back(orig netns.NsHandle) {
	if netns.Set(orig) == nil {
		runtime.UnlockOSThread()
	}
}

// inNS runs f on a thread inside ns.
func inNS(t testing.TB, ns netns.NsHandle, f func()) {
	t.Helper()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err0 := netns.Get()
		if err0 != nil {
			err = err0
			return
		}
		defer orig.Close()
		if err = netns.Set(ns); err != nil {
			back(orig)
			return
		}
		defer back(orig)
		f()
	}()
	<-done
	if err != nil {
		t.Fatalf("enter network namespace: %v", err)
	}
}

// platformIn returns a platform bound to ns.
func platformIn(t testing.TB, ns netns.NsHandle, o PlatformOptions) *linuxPlatform {
	t.Helper()
	var p *linuxPlatform
	inNS(t, ns, func() { p = NewPlatform(o).(*linuxPlatform) })
	if p.nsErr != nil {
		t.Fatal(p.nsErr)
	}
	t.Cleanup(p.close)
	return p
}

func handleIn(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func addr(t testing.TB, h *netlink.Handle, link netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, "parse "+cidr, err)
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	must(t, "add address "+cidr, h.AddrAdd(link, a))
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// terminal builds the namespace of a terminal: lo and two veth pairs,
// mngd0/mngd1 and mngv0/mngv1 (this kernel has no dummy driver), with
// documentation addresses on mngd0 and mngv0.
func terminal(t testing.TB, h *netlink.Handle) (dummy, veth0, veth1 netlink.Link) {
	t.Helper()
	lo, err := h.LinkByName("lo")
	must(t, "lo", err)
	must(t, "lo up", h.LinkSetUp(lo))
	must(t, "add mngd0", h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mngd0"}, PeerName: "mngd1"}))
	must(t, "add mngv0", h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mngv0"}, PeerName: "mngv1"}))
	dummy, err = h.LinkByName("mngd0")
	must(t, "mngd0", err)
	veth0, err = h.LinkByName("mngv0")
	must(t, "mngv0", err)
	veth1, err = h.LinkByName("mngv1")
	must(t, "mngv1", err)
	peer, err := h.LinkByName("mngd1")
	must(t, "mngd1", err)
	for _, l := range []netlink.Link{dummy, peer, veth0, veth1} {
		must(t, "up", h.LinkSetUp(l))
	}
	addr(t, h, dummy, "198.51.100.1/25")
	addr(t, h, dummy, "2001:db8:1::1/64")
	addr(t, h, veth0, "198.51.100.129/25")
	addr(t, h, veth0, "2001:db8:2::1/64")
	return dummy, veth0, veth1
}

func TestAdaptersAndRoutes(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	dummy, veth0, _ := terminal(t, h)
	must(t, "default route", h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}))
	must(t, "default route v6", h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("2001:db8:1::2")}))
	_, dst, _ := net.ParseCIDR("192.0.2.0/24")
	must(t, "table 100 route", h.RouteAdd(&netlink.Route{LinkIndex: veth0.Attrs().Index, Dst: dst, Gw: net.ParseIP("198.51.100.130"), Table: 100}))
	_, dst6, _ := net.ParseCIDR("2001:db8:99::/48")
	must(t, "multipath route", h.RouteAdd(&netlink.Route{Dst: dst6, MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("2001:db8:1::3")},
		{LinkIndex: veth0.Attrs().Index, Gw: net.ParseIP("2001:db8:2::3")},
	}}))

	p := platformIn(t, ns, PlatformOptions{})
	ctx := context.Background()
	ads, err := p.Adapters(ctx)
	must(t, "adapters", err)
	type want struct {
		kind, reason string
		addrs        []netip.Prefix
		up           bool
	}
	wants := map[string]want{
		"lo":    {KindLoopback, "IFF_LOOPBACK", []netip.Prefix{pfx("127.0.0.1/8"), pfx("::1/128")}, true},
		"mngd0": {KindVirtual, "netlink link type veth", []netip.Prefix{pfx("198.51.100.1/25"), pfx("2001:db8:1::1/64")}, true},
		"mngd1": {KindVirtual, "netlink link type veth", nil, true},
		"mngv0": {KindVirtual, "netlink link type veth", []netip.Prefix{pfx("198.51.100.129/25"), pfx("2001:db8:2::1/64")}, true},
		"mngv1": {KindVirtual, "netlink link type veth", nil, true},
	}
	var names []string
	for _, a := range ads {
		names = append(names, a.Name)
		w, ok := wants[a.Name]
		if !ok {
			t.Errorf("unexpected adapter %+v", a)
			continue
		}
		var addrs []netip.Prefix
		for _, p := range a.Addrs {
			if !p.Addr().IsLinkLocalUnicast() {
				addrs = append(addrs, p)
			}
		}
		slices.SortFunc(addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if a.Kind != w.kind || !strings.Contains(a.Reason, w.reason) || !slices.Equal(addrs, w.addrs) || a.Up != w.up {
			t.Errorf("%s: %s %q %v up=%v, want %s %q %v up=%v", a.Name, a.Kind, a.Reason, addrs, a.Up, w.kind, w.reason, w.addrs, w.up)
		}
		if a.Name == "mngd0" && (a.Index != dummy.Attrs().Index || a.HardwareAddr != dummy.Attrs().HardwareAddr.String() || a.HardwareAddr == "") {
			t.Errorf("mngd0 index %d hw %q, want %d %s", a.Index, a.HardwareAddr, dummy.Attrs().Index, dummy.Attrs().HardwareAddr)
		}
	}
	if len(names) != len(wants) {
		t.Errorf("adapters %v, want %d", names, len(wants))
	}

	routes, err := p.Routes(ctx)
	must(t, "routes", err)
	wantRoutes := []Route{
		{Dst: pfx("0.0.0.0/0"), Gateway: ip("198.51.100.2"), Interface: "mngd0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("198.51.100.0/25"), Interface: "mngd0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("198.51.100.128/25"), Interface: "mngv0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("192.0.2.0/24"), Gateway: ip("198.51.100.130"), Interface: "mngv0", Table: "100", Type: RouteUnicast},
		{Dst: pfx("::/0"), Gateway: ip("2001:db8:1::2"), Interface: "mngd0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("2001:db8:1::/64"), Interface: "mngd0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("2001:db8:2::/64"), Interface: "mngv0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("2001:db8:99::/48"), Gateway: ip("2001:db8:1::3"), Interface: "mngd0", Table: "main", Type: RouteUnicast},
		{Dst: pfx("2001:db8:99::/48"), Gateway: ip("2001:db8:2::3"), Interface: "mngv0", Table: "main", Type: RouteUnicast},
	}
	var got []Route
	for _, r := range routes {
		if r.Dst == pfx("fe80::/64") {
			if r.Interface == "" || r.Table != "main" {
				t.Errorf("link-local route %+v", r)
			}
			continue
		}
		got = append(got, r)
	}
	key := func(r Route) string {
		return fmt.Sprintf("%s %s %s %s %s", r.Dst, r.Gateway, r.Interface, r.Table, r.Type)
	}
	sortRoutes := func(rs []Route) {
		slices.SortFunc(rs, func(a, b Route) int { return strings.Compare(key(a), key(b)) })
	}
	sortRoutes(got)
	sortRoutes(wantRoutes)
	if !slices.Equal(got, wantRoutes) {
		t.Errorf("routes:\n%s\nwant:\n%s", fmtRoutes(got), fmtRoutes(wantRoutes))
	}
}

func fmtRoutes(rs []Route) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %s via %s dev %s table %s\n", r.Dst, r.Gateway, r.Interface, r.Table)
	}
	return b.String()
}

// TestPhoneTethering: a real interface named like the phone's in a sysfs
// tree is classified from the tree, and CutUSB cuts the phone off.
func TestPhoneTethering(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	// A veth: this kernel has no dummy driver.
	must(t, "add usb0", h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "usb0"}, PeerName: "usb0p"}))
	root := copyTree(t, "phone-rndis")
	p := platformIn(t, ns, PlatformOptions{SysfsRoot: root})
	ads, err := p.Adapters(context.Background())
	must(t, "adapters", err)
	var usb0 *Adapter
	for i := range ads {
		if ads[i].Name == "usb0" {
			usb0 = &ads[i]
		}
	}
	dev := filepath.Join(root, xhci+"1-2")
	if usb0 == nil || usb0.Kind != KindUSB || usb0.VendorID != "18d1" || usb0.ProductID != "4ee3" ||
		usb0.Driver != "rndis_host" || usb0.USBDevice != dev || !strings.Contains(usb0.Reason, "(RNDIS)") {
		t.Fatalf("usb0 = %+v", usb0)
	}
	must(t, "cut", p.CutUSB(*usb0))
	if b, _ := os.ReadFile(filepath.Join(dev, "authorized")); string(b) != "0" {
		t.Fatalf("authorized = %q after CutUSB", b)
	}
	must(t, "restore", p.RestoreUSB(usb0.USBDevice))
	if b, _ := os.ReadFile(filepath.Join(dev, "authorized")); string(b) != "1" {
		t.Fatalf("authorized = %q after RestoreUSB", b)
	}
	if err := p.CutUSB(Adapter{Name: "mngd0"}); err == nil || !strings.Contains(err.Error(), "no usb device behind it") {
		t.Errorf("CutUSB of an adapter without a usb device: %v", err)
	}
	if err := p.RestoreUSB("/etc"); err == nil || !strings.Contains(err.Error(), "is not under") {
		t.Errorf("RestoreUSB(/etc): %v", err)
	}
}

// TestScanWhileInterfacesCome and go: interfaces created and deleted
// during scans never fail one; each is either absent or classified.
func TestScanWhileInterfacesComeAndGo(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	terminal(t, h)
	p := platformIn(t, ns, PlatformOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var churn atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("flap%d", i%4)
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				continue
			}
			if l, err := h.LinkByName(name); err == nil {
				_ = h.LinkSetUp(l)
				_ = h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 51, 100, byte(200+i%4)), Mask: net.CIDRMask(32, 32)}})
				_ = h.LinkDel(l)
			}
			churn.Add(1)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	scans := 0
	for time.Now().Before(deadline) {
		ads, err := p.Adapters(ctx)
		if err != nil {
			t.Fatalf("scan %d: %v", scans, err)
		}
		for _, a := range ads {
			if strings.HasPrefix(a.Name, "flap") && a.Kind != KindVirtual && a.Kind != KindUnknown {
				t.Fatalf("%+v", a)
			}
		}
		if _, err := p.Routes(ctx); err != nil {
			t.Fatalf("routes %d: %v", scans, err)
		}
		scans++
	}
	cancel()
	wg.Wait()
	t.Logf("%d scans while %d interfaces came and went", scans, churn.Load())
	if churn.Load() < 10 {
		t.Fatalf("only %d interfaces came and went", churn.Load())
	}
}

// TestInterfaceGoneDuringScan: interfaces deleted after the netlink dump,
// before their classification, are left out; the scan does not fail.
func TestInterfaceGoneDuringScan(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	terminal(t, h)
	p := platformIn(t, ns, PlatformOptions{})
	p.listed = func() {
		l, err := h.LinkByName("mngv0") // its peer mngv1 goes with it
		if err == nil {
			err = h.LinkDel(l)
		}
		if err != nil {
			t.Errorf("delete mngv0: %v", err)
		}
	}
	ads, err := p.Adapters(context.Background())
	must(t, "adapters", err)
	var names []string
	for _, a := range ads {
		names = append(names, a.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"lo", "mngd0", "mngd1"}) {
		t.Fatalf("adapters %v, want lo mngd0 mngd1 (mngv0 and mngv1 gone)", names)
	}
}

// watcher runs Watch in the background and returns the channel of what
// it reported; it waits until the watch is live (an address toggled on
// lo is seen).
func watcher(t testing.TB, p *linuxPlatform, h *netlink.Handle) (<-chan string, func()) {
	return watcherHold(t, p, h, nil)
}

// watcherHold is watcher whose callback first calls hold (when not nil).
func watcherHold(t testing.TB, p *linuxPlatform, h *netlink.Handle, hold func()) (<-chan string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan string, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- p.Watch(ctx, func(what string) {
			if hold != nil {
				hold()
			}
			select {
			case ch <- what:
			default:
			}
		})
	}()
	lo, err := h.LinkByName("lo")
	must(t, "lo", err)
	probe := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(127, 0, 0, 99), Mask: net.CIDRMask(32, 32)}}
	ready := false
	for i := 0; i < 200 && !ready; i++ {
		_ = h.AddrAdd(lo, probe)
		_ = h.AddrDel(lo, probe)
		select {
		case <-ch:
			ready = true
		case err := <-errc:
			t.Fatalf("watch: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !ready {
		t.Fatal("the watch saw no change in 2 s")
	}
	stop := func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("watch: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return ch, stop
}

func drain(ch <-chan string) {
	for {
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

func TestWatch(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	dummy, _, _ := terminal(t, h)
	p := platformIn(t, ns, PlatformOptions{})
	ch, stop := watcher(t, p, h)

	expect := func(what string, change func() error) {
		t.Helper()
		drain(ch)
		start := time.Now()
		must(t, what, change())
		timeout := time.After(time.Second)
		for {
			select {
			case got := <-ch:
				if got == what {
					t.Logf("%s: reported after %v", what, time.Since(start))
					return
				}
			case <-timeout:
				t.Fatalf("%s: not reported within 1 s", what)
			}
		}
	}
	expect("route", func() error {
		return h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("198.51.100.2")})
	})
	expect("route", func() error {
		return h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("2001:db8:1::2")})
	})
	expect("addr", func() error {
		a, _ := netlink.ParseAddr("2001:db8:5::1/64")
		a.Flags = unix.IFA_F_NODAD
		return h.AddrAdd(dummy, a)
	})
	expect("link", func() error {
		return h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "mngbr9"}})
	})
	stop()
	// After the context ends, nothing more is reported.
	drain(ch)
	must(t, "route after stop", h.RouteDel(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}))
	select {
	case w := <-ch:
		t.Fatalf("reported %q after the watch ended", w)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestSocketsInNamespace: the platform lists the sockets of its own
// namespace, with this process behind them, and not the host's.
func TestSocketsInNamespace(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	terminal(t, h)
	var ln net.Listener
	var c net.Conn
	var err error
	inNS(t, ns, func() {
		if ln, err = net.Listen("tcp", "198.51.100.1:0"); err != nil {
			return
		}
		c, err = net.Dial("tcp", ln.Addr().String())
	})
	must(t, "listen and dial in the namespace", err)
	defer ln.Close()
	defer c.Close()
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, "listen on the host", err)
	defer host.Close()

	p := platformIn(t, ns, PlatformOptions{})
	socks, err := p.Sockets(context.Background())
	must(t, "sockets", err)
	lnAddr := netip.MustParseAddrPort(ln.Addr().String())
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	s, ok := findSocket(socks, func(s Socket) bool { return s.Local == lnAddr && s.State == "LISTEN" })
	if !ok || s.PID != int32(os.Getpid()) || s.Process == "" || s.User == "" {
		t.Errorf("listener %s: %+v %v", lnAddr, s, ok)
	}
	s, ok = findSocket(socks, func(s Socket) bool { return s.Local == local })
	if !ok || s.Remote != lnAddr || s.State != "ESTABLISHED" || s.PID != int32(os.Getpid()) {
		t.Errorf("connection from %s: %+v %v", local, s, ok)
	}
	hostAddr := netip.MustParseAddrPort(host.Addr().String())
	if s, ok := findSocket(socks, func(s Socket) bool { return s.Local == hostAddr }); ok {
		t.Errorf("the host's listener is listed in the namespace: %+v", s)
	}
}

func TestPlatformDNS(t *testing.T) {
	dir := t.TempDir()
	stub := filepath.Join(dir, "resolv.conf")
	up := filepath.Join(dir, "upstream.conf")
	must(t, "write", os.WriteFile(stub, []byte("nameserver 127.0.0.53\nnameserver 127.0.0.x\n"), 0o644))
	must(t, "write", os.WriteFile(up, []byte("nameserver 203.0.113.53\n"), 0o644))
	var logs syncBuffer
	p := NewPlatform(PlatformOptions{ResolvConf: []string{stub, up}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}).(*linuxPlatform)
	defer p.close()
	got, err := p.DNS(context.Background())
	must(t, "dns", err)
	want := []DNSServer{{Addr: ip("127.0.0.53"), Source: stub}, {Addr: ip("203.0.113.53"), Source: up + " (systemd-resolved)"}}
	if !slices.Equal(got, want) {
		t.Fatalf("DNS %v, want %v", got, want)
	}
	if !strings.Contains(logs.String(), `line 2: nameserver \"127.0.0.x\": not an IP address`) {
		t.Errorf("the bad line is not logged: %s", logs.String())
	}
	// The stub's upstream servers unknown: the part fails, nothing is guessed.
	must(t, "remove", os.Remove(up))
	if got, err := p.DNS(context.Background()); err == nil || got != nil {
		t.Fatalf("DNS without resolved's file: %v, %v", got, err)
	}
}

// TestWatchResubscribes: a burst of changes overflows a small receive
// buffer while the callback is slow (ENOBUFS ends the subscription); the
// watch subscribes again, says so, and sees the next change.
func TestWatchResubscribes(t *testing.T) {
	ns := newNS(t)
	h := handleIn(t, ns)
	dummy, _, _ := terminal(t, h)
	var logs syncBuffer
	p := platformIn(t, ns, PlatformOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	p.watchBuf = 1 // the kernel's minimum, a few KiB
	var stall atomic.Bool
	gate := make(chan struct{})
	ch, _ := watcherHold(t, p, h, func() {
		if stall.Load() {
			<-gate
		}
	})
	drain(ch)
	// The callback stalls: the watch stops reading while a burst of
	// changes overflows the socket.
	stall.Store(true)
	probe := &netlink.Route{LinkIndex: dummy.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 255, 0, 0), Mask: net.CIDRMask(16, 32)}}
	must(t, "first change", h.RouteAdd(probe))
	for i := range 2000 {
		dst := &net.IPNet{IP: net.IPv4(10, byte(i>>8), byte(i), 0), Mask: net.CIDRMask(24, 32)}
		must(t, "burst", h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Dst: dst}))
	}
	stall.Store(false)
	close(gate)
	deadline := time.After(5 * time.Second)
	for resubscribed := false; !resubscribed; {
		select {
		case w := <-ch:
			resubscribed = w == "resubscribed"
		case <-deadline:
			t.Fatal("no resubscription after the overflow")
		}
	}
	if !strings.Contains(logs.String(), "no buffer space available") {
		t.Errorf("the overflow is not what ended the subscription: %s", logs.String())
	}
	drain(ch)
	must(t, "default route", h.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}))
	// The kernel's own IPv6 messages of the new namespace (duplicate
	// address detection ending) can overflow the minimal buffer again
	// under load: another resubscription, which reports as well.
	deadline = time.After(time.Second)
	for {
		select {
		case w := <-ch:
			switch w {
			case "route":
				return
			case "resubscribed", "addr":
				t.Logf("after resubscribing: %q before the route", w)
				continue
			}
			t.Fatalf("after resubscribing: %q", w)
		case <-deadline:
			t.Fatal("the default route was not reported after resubscribing")
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
