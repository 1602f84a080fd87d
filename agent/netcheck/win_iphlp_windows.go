//go:build windows

package netcheck

// The IP Helper calls (iphlpapi.dll) of the Windows platform: adapters and
// their DNS servers (GetAdaptersAddresses), routes (GetIpForwardTable2),
// and change notifications (NotifyIpInterfaceChange, NotifyRouteChange2,
// NotifyUnicastIpAddressChange). Everything is copied into Go values
// before the buffers are freed.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// winAdapter is one entry of GetAdaptersAddresses, copied.
type winAdapter struct {
	index        uint32
	guid         string // AdapterName: "{…}", the key of the adapter's registry entries
	name         string // FriendlyName
	description  string
	hardwareAddr string
	ifType       uint32
	up           bool
	addrs        []netip.Prefix
	dns          []netip.Addr
}

// getAdapters lists every adapter, IPv4 and IPv6, with its unicast
// addresses and DNS servers.
func getAdapters() ([]winAdapter, error) {
	size := uint32(16 << 10)
	for range 5 {
		buf := make([]byte, size)
		first := (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0]))
		err := windows.GetAdaptersAddresses(windows.AF_UNSPEC, windows.GAA_FLAG_SKIP_ANYCAST|windows.GAA_FLAG_SKIP_MULTICAST, 0, first, &size)
		if errors.Is(err, windows.ERROR_BUFFER_OVERFLOW) {
			// The set grew: ask again with the size it says.
			continue
		}
		if errors.Is(err, windows.ERROR_NO_DATA) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("GetAdaptersAddresses: %w", err)
		}
		var out []winAdapter
		for a := first; a != nil; a = a.Next {
			out = append(out, copyAdapter(a))
		}
		return out, nil
	}
	return nil, errors.New("GetAdaptersAddresses: the adapter list kept growing")
}

func copyAdapter(a *windows.IpAdapterAddresses) winAdapter {
	w := winAdapter{
		index:       a.IfIndex,
		guid:        windows.BytePtrToString(a.AdapterName),
		name:        windows.UTF16PtrToString(a.FriendlyName),
		description: windows.UTF16PtrToString(a.Description),
		ifType:      a.IfType,
		up:          a.OperStatus == windows.IfOperStatusUp,
	}
	if w.index == 0 {
		w.index = a.Ipv6IfIndex // IPv4 off on this adapter
	}
	if n := a.PhysicalAddressLength; n > 0 && n <= uint32(len(a.PhysicalAddress)) {
		w.hardwareAddr = net.HardwareAddr(a.PhysicalAddress[:n]).String()
	}
	for u := a.FirstUnicastAddress; u != nil; u = u.Next {
		addr, ok := sockaddrAddr(u.Address)
		if !ok {
			continue
		}
		if p := netip.PrefixFrom(addr, int(u.OnLinkPrefixLength)); p.IsValid() {
			w.addrs = append(w.addrs, p)
		} else {
			w.addrs = append(w.addrs, netip.PrefixFrom(addr, addr.BitLen()))
		}
	}
	for d := a.FirstDnsServerAddress; d != nil; d = d.Next {
		if addr, ok := sockaddrAddr(d.Address); ok {
			w.dns = append(w.dns, addr)
		}
	}
	return w
}

// sockaddrAddr reads the address of a SOCKET_ADDRESS, without its zone.
func sockaddrAddr(s windows.SocketAddress) (netip.Addr, bool) {
	ip := s.IP()
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// inetAddr reads a SOCKADDR_INET.
func inetAddr(s *windows.RawSockaddrInet) (netip.Addr, bool) {
	switch s.Family {
	case windows.AF_INET:
		return netip.AddrFrom4((*windows.RawSockaddrInet4)(unsafe.Pointer(s)).Addr), true
	case windows.AF_INET6:
		return netip.AddrFrom16((*windows.RawSockaddrInet6)(unsafe.Pointer(s)).Addr), true
	}
	return netip.Addr{}, false
}

// winRoute is one row of GetIpForwardTable2, copied.
type winRoute struct {
	dst     netip.Prefix
	nextHop netip.Addr // unspecified: on-link
	index   uint32
}

func getRoutes() ([]winRoute, error) {
	var tab *windows.MibIpForwardTable2
	if err := windows.GetIpForwardTable2(windows.AF_UNSPEC, &tab); err != nil {
		return nil, fmt.Errorf("GetIpForwardTable2: %w", err)
	}
	defer windows.FreeMibTable(unsafe.Pointer(tab))
	rows := tab.Rows()
	out := make([]winRoute, 0, len(rows))
	for i := range rows {
		r := &rows[i]
		dst, ok := inetAddr(&r.DestinationPrefix.Prefix)
		if !ok {
			continue
		}
		pfx := netip.PrefixFrom(dst.Unmap(), int(r.DestinationPrefix.PrefixLength))
		if !pfx.IsValid() {
			continue
		}
		hop, _ := inetAddr(&r.NextHop)
		out = append(out, winRoute{dst: pfx.Masked(), nextHop: hop.Unmap(), index: r.InterfaceIndex})
	}
	return out, nil
}

// Notifications. The callbacks are made once per process (NewCallback's
// slots are never given back) and hand each notification to every watch
// registered at that time; they never block (CancelMibChangeNotify2 waits
// for running callbacks).
var (
	notifyOnce      sync.Once
	notifyCallbacks map[string]uintptr
	watchersMu      sync.Mutex
	watchers        = map[*winWatch]struct{}{}
)

type winWatch struct {
	ch chan string
}

func (w *winWatch) post(what string) {
	select {
	case w.ch <- what:
	default: // a change of that burst is pending already
	}
}

func notifyAll(what string) {
	watchersMu.Lock()
	defer watchersMu.Unlock()
	for w := range watchers {
		w.post(what)
	}
}

func callbacks() map[string]uintptr {
	notifyOnce.Do(func() {
		notifyCallbacks = map[string]uintptr{
			"link":  windows.NewCallback(func(_, _, _ uintptr) uintptr { notifyAll("link"); return 0 }),
			"route": windows.NewCallback(func(_, _, _ uintptr) uintptr { notifyAll("route"); return 0 }),
			"addr":  windows.NewCallback(func(_, _, _ uintptr) uintptr { notifyAll("addr"); return 0 }),
		}
	})
	return notifyCallbacks
}

// notifyRegister registers the three notifications; cancel undoes
// what was registered.
func notifyRegister() (cancel func(), err error) {
	cbs := callbacks()
	var handles []windows.Handle
	cancel = func() {
		for _, h := range handles {
			windows.CancelMibChangeNotify2(h)
		}
	}
	for _, reg := range []struct {
		what string
		call func(family uint16, callback uintptr, callerContext unsafe.Pointer, initialNotification bool, notificationHandle *windows.Handle) error
		name string
	}{
		{"link", windows.NotifyIpInterfaceChange, "NotifyIpInterfaceChange"},
		{"route", windows.NotifyRouteChange2, "NotifyRouteChange2"},
		{"addr", windows.NotifyUnicastIpAddressChange, "NotifyUnicastIpAddressChange"},
	} {
		var h windows.Handle
		if err := reg.call(windows.AF_UNSPEC, cbs[reg.what], nil, false, &h); err != nil {
			cancel()
			return nil, fmt.Errorf("%s: %w", reg.name, err)
		}
		// Wine registers without a handle (its notifications are stubs);
		// Windows always gives one.
		if h != 0 {
			handles = append(handles, h)
		}
	}
	return cancel, nil
}
