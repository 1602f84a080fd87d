//go:build windows

package netcheck

// These tests call IP Helper and the registry for real. make wine-test can
// run them under Wine (scripts/wine/), whose iphlpapi reads the Linux
// host's interfaces, addresses, routes and resolv.conf: there the results
// are compared with what Linux itself says (Z:\sys, Z:\proc, Z:\etc). On
// Windows they are compared with the standard library's view.

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/mnguard/mnguard/internal/testenv"
)

func adapterNamed(as []Adapter, name string) *Adapter {
	for i := range as {
		if as[i].Name == name {
			return &as[i]
		}
	}
	return nil
}

func TestWindowsAdapters(t *testing.T) {
	as, err := NewPlatform(PlatformOptions{}).Adapters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		t.Logf("%d %q kind %s (%s) hw %s up %v addrs %v", a.Index, a.Name, a.Kind, a.Reason, a.HardwareAddr, a.Up, a.Addrs)
		if a.Name == "" || a.Kind == "" || a.Reason == "" {
			t.Errorf("adapter %+v: name, kind and reason must be set", a)
		}
	}
	var lo *Adapter
	for i := range as {
		if as[i].Loopback {
			lo = &as[i]
		}
	}
	if lo == nil || lo.Kind != KindLoopback || !slices.Contains(lo.Addrs, netip.MustParsePrefix("127.0.0.1/8")) {
		t.Fatalf("no loopback adapter with 127.0.0.1/8: %+v", lo)
	}

	if testenv.WineVersion() == "" {
		// Windows: the standard library lists the same interfaces.
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			a := adapterNamed(as, i.Name)
			if a == nil {
				t.Errorf("interface %q (net.Interfaces) missing", i.Name)
				continue
			}
			if a.Index != i.Index || a.HardwareAddr != i.HardwareAddr.String() {
				t.Errorf("%q: index %d hw %q, net.Interfaces says %d %q", i.Name, a.Index, a.HardwareAddr, i.Index, i.HardwareAddr)
			}
		}
		return
	}
	// Wine: every Linux interface, its MAC address and its IPv6 addresses
	// with their prefix lengths, as Linux gives them.
	ents, err := os.ReadDir(`Z:\sys\class\net`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) == 0 {
		t.Fatal("Z:\\sys\\class\\net is empty")
	}
	for _, e := range ents {
		a := adapterNamed(as, e.Name())
		if a == nil {
			t.Errorf("Linux interface %q missing", e.Name())
			continue
		}
		if e.Name() == "lo" {
			continue
		}
		mac, err := os.ReadFile(`Z:\sys\class\net\` + e.Name() + `\address`)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(mac)); a.HardwareAddr != want {
			t.Errorf("%s: hardware address %q, sysfs %q", a.Name, a.HardwareAddr, want)
		}
		if a.Kind != KindEthernet && a.Kind != KindUnknown {
			t.Errorf("%s: kind %s, want ethernet or (no PnP device under Wine) unknown", a.Name, a.Kind)
		}
	}
	f, err := os.Open(`Z:\proc\net\if_inet6`)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 6 {
			continue
		}
		b, err := hex.DecodeString(fs[0])
		plen, err2 := strconv.ParseUint(fs[2], 16, 8)
		if err != nil || err2 != nil || len(b) != 16 {
			t.Fatalf("if_inet6 line %q", sc.Text())
		}
		want := netip.PrefixFrom(netip.AddrFrom16([16]byte(b)), int(plen))
		a := adapterNamed(as, fs[5])
		if a == nil || !slices.Contains(a.Addrs, want) {
			t.Errorf("%s: %s (Linux) missing from %+v", fs[5], want, a)
		}
	}
}

// TestWindowsPnPClassification writes a network class key of its own with
// a tethering phone's PnP instance behind a real adapter's GUID, and one
// of a PCI card, and reads them through the platform.
func TestWindowsPnPClassification(t *testing.T) {
	base := fmt.Sprintf(`SOFTWARE\mnguard-test\netclass-%d`, windows.GetCurrentProcessId())
	t.Cleanup(func() { deleteTree(t, base) })
	was, err := getAdapters()
	if err != nil {
		t.Fatal(err)
	}
	var real *winAdapter
	for i := range was {
		if was[i].ifType != windows.IF_TYPE_SOFTWARE_LOOPBACK && strings.HasPrefix(was[i].guid, "{") {
			real = &was[i]
			break
		}
	}
	if real == nil {
		t.Fatal("no adapter but the loopback")
	}
	setPnP := func(guid, id string) {
		k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, base+`\`+guid+`\Connection`, registry.SET_VALUE)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if err := k.SetStringValue("PnPInstanceId", id); err != nil {
			t.Fatal(err)
		}
	}
	p := &windowsPlatform{classKey: base}

	// No key: undecided, and the reason says why.
	a := p.adapter(winAdapter{guid: real.guid, name: real.name, ifType: windows.IF_TYPE_ETHERNET_CSMACD, description: "Intel(R) Ethernet Connection I219-LM"})
	if a.Kind != KindUnknown || !strings.Contains(a.Reason, "PnP instance unreadable") {
		t.Errorf("without a PnP key: %s (%s), want unknown, PnP instance unreadable", a.Kind, a.Reason)
	}

	setPnP(real.guid, `USB\VID_04E8&PID_6863&MI_00\6&1A2B3C4D&0&0000`)
	a = p.adapter(*real)
	if a.Kind != KindUSB || a.VendorID != "04e8" || a.ProductID != "6863" || !strings.Contains(a.Reason, `USB\VID_04E8`) || a.USBDevice != `USB\VID_04E8&PID_6863&MI_00\6&1A2B3C4D&0&0000` {
		t.Errorf("phone in RNDIS mode behind %s: %+v, want usb 04e8:6863", real.name, a)
	}
	setPnP(real.guid, `PCI\VEN_8086&DEV_15BB&SUBSYS_07B11028&REV_10\3&11583659&0&FE`)
	a = p.adapter(*real)
	if real.ifType == windows.IF_TYPE_ETHERNET_CSMACD && a.Kind != KindEthernet {
		t.Errorf("PCI card behind %s: %s (%s), want ethernet", real.name, a.Kind, a.Reason)
	}
	setPnP(real.guid, `BTH\MS_BTHPAN\7&2A3B4C5D&0&2`)
	if a = p.adapter(*real); a.Kind != KindBluetooth {
		t.Errorf("Bluetooth PAN behind %s: %s (%s)", real.name, a.Kind, a.Reason)
	}
	// A name that is not a GUID never reaches the registry.
	if _, err := pnpInstance(base, `..\..\SAM`); err == nil {
		t.Error(`pnpInstance accepted ..\..\SAM`)
	}
}

func deleteTree(t *testing.T, path string) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, path, registry.ENUMERATE_SUB_KEYS)
	if err == nil {
		subs, _ := k.ReadSubKeyNames(-1)
		k.Close()
		for _, s := range subs {
			deleteTree(t, path+`\`+s)
		}
	}
	registry.DeleteKey(registry.LOCAL_MACHINE, path)
}

func TestWindowsClassify(t *testing.T) {
	unread := errors.New("not found")
	for _, tc := range []struct {
		name       string
		ifType     uint32
		desc, pnp  string
		pnpErr     error
		kind       string
		vid, pid   string
		reasonPart string
	}{
		{"loopback", 24, "Software Loopback Interface 1", "", nil, KindLoopback, "", "", "IfType 24"},
		{"pci ethernet", 6, "Intel(R) Ethernet Connection (7) I219-LM", `PCI\VEN_8086&DEV_15BB\3&1`, nil, KindEthernet, "", "", `PCI\VEN_8086`},
		{"hyper-v guest nic", 6, "Microsoft Hyper-V Network Adapter", `VMBUS\{F8615163-DF3E-46C5-913F-F2D2F965ED0E}\{1}`, nil, KindEthernet, "", "", "VMBUS"},
		{"wifi", 71, "Intel(R) Wi-Fi 6 AX201 160MHz", `PCI\VEN_8086&DEV_A0F0\3&1`, nil, KindWireless, "", "", "IfType 71"},
		{"usb wifi dongle", 71, "TP-Link Wireless USB Adapter", `USB\VID_2357&PID_010C\1`, nil, KindWireless, "2357", "010c", `USB\VID_2357`},
		{"android rndis", 6, "Remote NDIS based Internet Sharing Device", `USB\VID_18D1&PID_4EE4&MI_00\6&1`, nil, KindUSB, "18d1", "4ee4", `USB\VID_18D1`},
		{"iphone", 6, "Apple Mobile Device Ethernet", `USB\VID_05AC&PID_12A8&MI_03\6&2`, nil, KindUSB, "05ac", "12a8", "PnP"},
		{"usb ethernet dongle", 6, "Realtek USB GbE Family Controller", `USB\VID_0BDA&PID_8153\000001`, nil, KindUSB, "0bda", "8153", "PnP"},
		{"rndis, pnp unreadable", 6, "Remote NDIS based Internet Sharing Device #2", "", unread, KindUSB, "", "", "description"},
		{"bluetooth pan", 6, "Bluetooth Device (Personal Area Network)", `BTH\MS_BTHPAN\7&2`, nil, KindBluetooth, "", "", `BTH\MS_BTHPAN`},
		{"bluetooth pan, pnp unreadable", 6, "Bluetooth Device (Personal Area Network) #2", "", unread, KindBluetooth, "", "", "description"},
		{"vpn tunnel", 131, "Teredo Tunneling Pseudo-Interface", "", unread, KindVirtual, "", "", "tunnel"},
		{"ppp", 23, "WAN Miniport (PPPOE)", `SWD\MSRRAS\MS_NDISWANPPPOE`, nil, KindVirtual, "", "", "PPP"},
		{"tap", 6, "TAP-Windows Adapter V9", `ROOT\NET\0000`, nil, KindVirtual, "", "", "software device"},
		{"hyper-v host vswitch", 6, "Hyper-V Virtual Ethernet Adapter", `ROOT\VMS_MP\0000`, nil, KindVirtual, "", "", `ROOT\VMS_MP`},
		{"ethernet, pnp unreadable", 6, "Intel(R) Ethernet", "", unread, KindUnknown, "", "", "PnP instance unreadable (not found)"},
		{"ethernet, unknown bus", 6, "Thunderbolt Networking", `THUNDERBOLT\NET\1`, nil, KindUnknown, "", "", "undecided"},
		{"other iftype", 1, "Something", `PCI\VEN_1\1`, nil, KindUnknown, "", "", "IfType 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := classifyWin(tc.ifType, tc.desc, tc.pnp, tc.pnpErr)
			if (c.usbDevice != "") != (tc.kind == KindUSB && tc.pnp != "") || (c.usbDevice != "" && c.usbDevice != tc.pnp) {
				t.Errorf("usbDevice %q for %s behind %q", c.usbDevice, c.kind, tc.pnp)
			}
			if c.kind != tc.kind || c.vendorID != tc.vid || c.productID != tc.pid || !strings.Contains(c.reason, tc.reasonPart) {
				t.Errorf("classifyWin = %+v, want %s %s:%s, reason with %q", c, tc.kind, tc.vid, tc.pid, tc.reasonPart)
			}
		})
	}
}

func TestWindowsRoutes(t *testing.T) {
	rs, err := NewPlatform(PlatformOptions{}).Routes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		t.Logf("%s via %v dev %q", r.Dst, r.Gateway, r.Interface)
		if !r.Dst.IsValid() || r.Interface == "" {
			t.Errorf("route %+v: destination and interface must be set", r)
		}
	}
	if testenv.WineVersion() == "" {
		if len(rs) == 0 {
			t.Error("no route")
		}
		return
	}
	// Wine: Linux's IPv4 main table, every row.
	b, err := os.ReadFile(`Z:\proc\net\route`)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")[1:]
	if len(lines) == 0 {
		t.Skip("the host has no IPv4 route")
	}
	le := func(s string) netip.Addr {
		v, err := strconv.ParseUint(s, 16, 32)
		if err != nil {
			t.Fatalf("/proc/net/route: %q", s)
		}
		return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
	}
	for _, l := range lines {
		fs := strings.Fields(l)
		mask := le(fs[7]).As4()
		bits := 0
		for _, m := range mask {
			for ; m != 0; m <<= 1 {
				bits++
			}
		}
		want := Route{Dst: netip.PrefixFrom(le(fs[1]), bits), Interface: fs[0], Table: "main"}
		if gw := le(fs[2]); !gw.IsUnspecified() {
			want.Gateway = gw
		}
		if !slices.Contains(rs, want) {
			t.Errorf("Linux route %+v missing", want)
		}
	}
}

func TestWindowsDNS(t *testing.T) {
	p := NewPlatform(PlatformOptions{})
	ds, err := p.DNS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	as, err := p.Adapters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		t.Logf("%s from %s", d.Addr, d.Source)
		name, ok := strings.CutPrefix(d.Source, "adapter ")
		a := adapterNamed(as, name)
		if !ok || a == nil || !a.Up || !d.Addr.IsValid() {
			t.Errorf("DNS server %+v: want a valid address of an adapter that is up", d)
		}
	}
	if testenv.WineVersion() == "" {
		return
	}
	// Wine: the nameservers of Linux's resolv.conf, on every adapter up.
	b, err := os.ReadFile(`Z:\etc\resolv.conf`)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 || fs[0] != "nameserver" {
			continue
		}
		want, err := netip.ParseAddr(fs[1])
		if err != nil {
			continue
		}
		for _, a := range as {
			if a.Up && !slices.Contains(ds, DNSServer{Addr: want, Source: "adapter " + a.Name}) {
				t.Errorf("nameserver %s (resolv.conf) missing for adapter %s", want, a.Name)
			}
		}
	}
}

// TestWindowsWatch registers the three notifications, delivers one through
// each real callback, and ends with its context.
func TestWindowsWatch(t *testing.T) {
	p := NewPlatform(PlatformOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, func(what string) { got <- what }) }()

	// Wait until the watch is registered, then call the callbacks as
	// iphlpapi does (CallerContext, Row, NotificationType).
	deadline := time.Now().Add(5 * time.Second)
	for {
		watchersMu.Lock()
		n := len(watchers)
		watchersMu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Watch did not register")
		}
		select {
		case err := <-done:
			t.Fatalf("Watch ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, what := range []string{"link", "route", "addr"} {
		syscall.SyscallN(callbacks()[what], 0, 0, 1)
		select {
		case w := <-got:
			if w != what {
				t.Errorf("callback %s delivered %q", what, w)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("callback %s delivered nothing", what)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v at the context's end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not end with its context")
	}
	watchersMu.Lock()
	defer watchersMu.Unlock()
	if len(watchers) != 0 {
		t.Errorf("%d watchers left registered", len(watchers))
	}
}

// TestWindowsSockets: a listener and a connection of this process are
// listed with its PID.
func TestWindowsSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ss, err := NewPlatform(PlatformOptions{}).Sockets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lport := netip.MustParseAddrPort(ln.Addr().String())
	cport := netip.MustParseAddrPort(c.LocalAddr().String())
	// Wine's GetExtendedTcpTable finds a socket's owner among the file
	// descriptors of Wine processes; a listening socket is held by
	// wineserver alone and comes with PID 0. Windows names the owner.
	wine := testenv.WineVersion() != ""
	me := int32(os.Getpid())
	var listener, conn bool
	for _, s := range ss {
		if s.Proto != "tcp" {
			continue
		}
		if s.Local == lport && s.State == "LISTEN" && !s.Remote.IsValid() && (s.PID == me || wine && s.PID == 0) {
			listener = true
		}
		if s.Local == cport && s.Remote == lport && s.State == "ESTABLISHED" && s.PID == me && strings.HasPrefix(s.Process, "netcheck.test") {
			conn = true
		}
	}
	if !listener || !conn {
		for _, s := range ss {
			t.Logf("%+v", s)
		}
		t.Errorf("listener on %s listed %v, connection from %s with PID %d and its name %v", lport, listener, cport, me, conn)
	}
}

// TestWindowsCutUSB: the device is looked up among the present network
// devices by its instance id. No USB network device exists here (nor under
// Wine, whose SetupAPI lists no USB device): the lookup must say so, and
// refuse what is not a USB instance id.
func TestWindowsCutUSB(t *testing.T) {
	p := NewPlatform(PlatformOptions{})
	if err := p.CutUSB(Adapter{Name: "Ethernet 3", Kind: KindUSB}); err == nil || !strings.Contains(err.Error(), "no usb device") {
		t.Errorf("CutUSB without a device = %v", err)
	}
	ghost := `USB\VID_18D1&PID_4EE4&MI_00\6&DEADBEEF&0&0000`
	err := p.CutUSB(Adapter{Name: "Ethernet 3", Kind: KindUSB, USBDevice: ghost})
	if !errors.Is(err, errNoDevice) || !strings.Contains(err.Error(), "Ethernet 3") {
		t.Errorf("CutUSB of a device that is not there = %v, want errNoDevice naming the adapter", err)
	}
	if err := p.RestoreUSB(ghost); !errors.Is(err, errNoDevice) {
		t.Errorf("RestoreUSB of a device that is not there = %v", err)
	}
	if err := p.RestoreUSB(`PCI\VEN_8086&DEV_15BB\3&1`); err == nil || !strings.Contains(err.Error(), "not a USB device") {
		t.Errorf("RestoreUSB of a PCI device = %v, want a refusal", err)
	}
}

// BenchmarkWindowsScan times each call the scanner makes of the platform:
// adapters (with their PnP lookups), routes, DNS servers, and sockets with
// their processes.
func BenchmarkWindowsScan(b *testing.B) {
	p := NewPlatform(PlatformOptions{})
	ctx := context.Background()
	for _, part := range []struct {
		name string
		call func() error
	}{
		{"Adapters", func() error { _, err := p.Adapters(ctx); return err }},
		{"Routes", func() error { _, err := p.Routes(ctx); return err }},
		{"DNS", func() error { _, err := p.DNS(ctx); return err }},
		{"Sockets", func() error { _, err := p.Sockets(ctx); return err }},
	} {
		b.Run(part.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := part.call(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
