//go:build linux

package netcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// linuxPlatform reads interfaces, routes and changes through rtnetlink in
// the network namespace that was current on the thread that called
// NewPlatform, and classifies interfaces through sysfs.
type linuxPlatform struct {
	sysfs  string
	resolv []string
	log    *slog.Logger
	ns     netns.NsHandle
	nsErr  error
	// watchBuf replaces watchBuffer (tests overflow it).
	watchBuf int
	diagOnce sync.Once
	// listed, when set, runs between the netlink dumps and the sysfs
	// reads of Adapters (tests: an interface goes away there).
	listed func()
}

// NewPlatform returns the Linux platform. It is bound to the network
// namespace of the calling thread (for the agent, the host's; tests call
// it on a locked thread inside a namespace of their own): interfaces,
// routes, sockets and the watch are that namespace's.
func NewPlatform(o PlatformOptions) Platform {
	p := &linuxPlatform{sysfs: o.SysfsRoot, resolv: o.ResolvConf, log: o.Logger}
	if p.sysfs == "" {
		p.sysfs = "/sys"
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.ns, p.nsErr = netns.Get()
	if p.nsErr != nil {
		p.nsErr = fmt.Errorf("network namespace: %w", p.nsErr)
	}
	return p
}

// close releases the namespace handle (tests; the agent keeps its
// platform for its lifetime).
func (p *linuxPlatform) close() {
	if p.nsErr == nil {
		p.ns.Close()
	}
}

// handle opens a netlink handle in the platform's namespace. One per call:
// a Handle's sockets must not be shared by concurrent callers.
func (p *linuxPlatform) handle() (*netlink.Handle, error) {
	if p.nsErr != nil {
		return nil, p.nsErr
	}
	h, err := netlink.NewHandleAt(p.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return h, nil
}

// dumpTries bounds the retries of a netlink dump the kernel interrupted
// (the set changed while it was read: an interface came or went).
const dumpTries = 5

func retryDump[T any](what string, f func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpTries {
		var v []T
		v, err = f()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("%s: interrupted %d times in a row: %w", what, dumpTries, err)
}

func (p *linuxPlatform) Adapters(ctx context.Context) ([]Adapter, error) {
	h, err := p.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := retryDump("list links", h.LinkList)
	if err != nil {
		return nil, err
	}
	addrs, err := retryDump("list addresses", func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, err
	}
	byIndex := map[int][]netip.Prefix{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones))
	}
	if p.listed != nil {
		p.listed()
	}
	out := make([]Adapter, 0, len(links))
	for _, l := range links {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		at := l.Attrs()
		ad := Adapter{
			Name:     at.Name,
			Index:    at.Index,
			Addrs:    byIndex[at.Index],
			Up:       at.Flags&net.FlagUp != 0,
			Loopback: at.Flags&net.FlagLoopback != 0,
		}
		if len(at.HardwareAddr) > 0 {
			ad.HardwareAddr = at.HardwareAddr.String()
		}
		c := classifyNet(p.sysfs, netLink{Name: at.Name, Index: at.Index, Loopback: ad.Loopback, LinkType: l.Type()})
		if c.Kind == KindUnknown || strings.Contains(c.Reason, "not in sysfs") {
			// Gone while it was read: absent, not unknown.
			if _, err := h.LinkByIndex(at.Index); err != nil && errors.As(err, new(netlink.LinkNotFoundError)) {
				continue
			}
		}
		ad.Kind, ad.Reason = c.Kind, c.Reason
		ad.Driver, ad.VendorID, ad.ProductID, ad.USBDevice = c.Driver, c.VendorID, c.ProductID, c.USBDevice
		out = append(out, ad)
	}
	slices.SortFunc(out, func(a, b Adapter) int { return a.Index - b.Index })
	return out, nil
}

func (p *linuxPlatform) Routes(ctx context.Context) ([]Route, error) {
	h, err := p.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := retryDump("list links", h.LinkList)
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	routes, err := retryDump("list routes", func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range routes {
		out = append(out, routesFrom(r, names)...)
	}
	return out, nil
}

// routesFrom converts one kernel route, one Route per next hop. It skips
// the local table (the host's own addresses, broadcast) and the kernel's
// own unreachable routes (IPv6's null entry), never a route someone made.
func routesFrom(r netlink.Route, names map[int]string) []Route {
	if r.Table == unix.RT_TABLE_LOCAL {
		return nil
	}
	switch r.Type {
	case unix.RTN_LOCAL, unix.RTN_BROADCAST:
		return nil
	case unix.RTN_UNREACHABLE:
		if r.Protocol == unix.RTPROT_KERNEL {
			return nil
		}
	}
	var dst netip.Prefix
	if r.Dst != nil && r.Dst.IP != nil {
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			return nil
		}
		ones, _ := r.Dst.Mask.Size()
		dst = netip.PrefixFrom(ip.Unmap(), ones)
	} else if r.Family == unix.AF_INET6 {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else if r.Family == unix.AF_INET {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	} else {
		return nil // MPLS and other families: no IP destination
	}
	table, typ := tableName(r.Table), routeType(r.Type)
	one := func(gw net.IP, via netlink.Destination, ifindex int) Route {
		rt := Route{Dst: dst, Table: table, Interface: ifName(names, ifindex), Type: typ}
		if a, ok := netip.AddrFromSlice(gw); ok {
			rt.Gateway = a.Unmap()
		} else if v, ok := via.(*netlink.Via); ok {
			if a, ok := netip.AddrFromSlice(v.Addr); ok {
				rt.Gateway = a.Unmap()
			}
		}
		return rt
	}
	if len(r.MultiPath) == 0 {
		return []Route{one(r.Gw, r.Via, r.LinkIndex)}
	}
	out := make([]Route, 0, len(r.MultiPath))
	for _, nh := range r.MultiPath {
		out = append(out, one(nh.Gw, nh.Via, nh.LinkIndex))
	}
	return out
}

// routeType names a kernel route type (rtm_type) as ip-route(8) does.
func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST:
		return RouteUnicast
	case unix.RTN_BLACKHOLE:
		return RouteBlackhole
	case unix.RTN_UNREACHABLE:
		return RouteUnreachable
	case unix.RTN_PROHIBIT:
		return RouteProhibit
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_ANYCAST:
		return "anycast"
	case unix.RTN_NAT:
		return "nat"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	}
	return "type " + strconv.Itoa(t)
}

func ifName(names map[int]string, index int) string {
	if index == 0 {
		return ""
	}
	if n, ok := names[index]; ok {
		return n
	}
	return "if" + strconv.Itoa(index)
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	case unix.RT_TABLE_LOCAL:
		return "local"
	}
	return strconv.Itoa(t)
}

// Sockets lists the namespace's sockets through sock_diag: with 10,000
// sockets it costs about half the CPU of gopsutil's /proc/net parsing
// (BenchmarkScanSockets5000); processes are still named by gopsutil.
//
// A kernel without sock_diag (CONFIG_INET_DIAG off) answers
// EPROTONOSUPPORT or ENOENT: the sockets are then read through gopsutil
// (/proc/net, the namespace of the process).
func (p *linuxPlatform) Sockets(ctx context.Context) ([]Socket, error) {
	if p.nsErr != nil {
		return nil, p.nsErr
	}
	s, err := openDiag(p.ns)
	var socks []Socket
	if err == nil {
		socks, err = diagSockets(ctx, s)
		s.Close()
	}
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) {
		p.diagOnce.Do(func() { p.log.Warn("no sock_diag in this kernel: sockets read through /proc/net", "err", err) })
		return listSockets(ctx)
	}
	if err != nil {
		return nil, err
	}
	return socks, nil
}

// DNS reads the resolv.conf files; a nameserver line that does not parse
// is logged (the resolver skips it too) and does not fail the part.
func (p *linuxPlatform) DNS(ctx context.Context) ([]DNSServer, error) {
	servers, bad, err := dnsServers(p.resolv)
	if bad != nil {
		p.log.Warn("resolv.conf: nameserver lines skipped", "err", bad)
	}
	if err != nil {
		return nil, err
	}
	return servers, nil
}

// watchBuffer is the receive buffer of each subscription: a burst of
// changes (an interface with many addresses going down) should not
// overflow it; when one does (ENOBUFS), the watch subscribes again and
// reports a change, since what was lost is unknown.
const watchBuffer = 1 << 20

// resubscribeTries bounds consecutive failed subscriptions before Watch
// gives up and returns the error; a subscription that lived for
// healthyWatch counts as a success.
const (
	resubscribeTries = 5
	healthyWatch     = 10 * time.Second
)

func (p *linuxPlatform) Watch(ctx context.Context, changed func(what string)) error {
	if p.nsErr != nil {
		return p.nsErr
	}
	buf := p.watchBuf
	if buf == 0 {
		buf = watchBuffer
	}
	failures := 0
	// Once subscribed, the caller hears it: a change between its first
	// scan and the subscription would otherwise go unseen until its next
	// periodic scan. After a failed subscription, what happened while
	// nobody listened is unknown as well.
	ready := "subscribed"
	for {
		start := time.Now()
		err := p.watchOnce(ctx, buf, ready, changed)
		ready = "resubscribed"
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) >= healthyWatch {
			failures = 0
		}
		failures++
		if failures > resubscribeTries {
			return fmt.Errorf("netlink watch: %w", err)
		}
		p.log.Warn("netlink watch failed, subscribing again", "err", err, "attempt", failures)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(failures-1) * 100 * time.Millisecond):
		}
	}
}

// watchOnce subscribes to route, address and link changes, calls
// changed(ready) once the three subscriptions are in place, then changed
// for each change until ctx ends (nil) or a subscription ends (its
// error). A message the library could not decode is a change all the
// same.
func (p *linuxPlatform) watchOnce(ctx context.Context, buf int, ready string, changed func(what string)) error {
	done := make(chan struct{})
	routes := make(chan netlink.RouteUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	defer func() {
		close(done)
		// The receivers may be blocked sending: let them see the closed
		// socket and end.
		go func() {
			for range routes {
			}
		}()
		go func() {
			for range addrs {
			}
		}()
		go func() {
			for range links {
			}
		}()
	}()
	type subErr struct {
		what string
		err  error
	}
	errc := make(chan subErr, 64)
	onErr := func(what string) func(error) {
		return func(err error) {
			select {
			case errc <- subErr{what, err}:
			default:
			}
		}
	}
	ns := p.ns
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr("route"), ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr("addr"), ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr("link"), ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	// The sockets are bound to their groups: from here on no change is
	// missed, and whatever changed before is for the caller to look at.
	changed(ready)
	last := map[string]error{}
	ended := func(what string) error {
		// The receiver reports its error before it closes the channel.
	drain:
		for {
			select {
			case e := <-errc:
				last[e.what] = e.err
			default:
				break drain
			}
		}
		if err := last[what]; err != nil {
			return fmt.Errorf("%s subscription: %w", what, err)
		}
		return fmt.Errorf("%s subscription ended", what)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-errc:
			last[e.what] = e.err
			p.log.Warn("netlink watch", "subscription", e.what, "err", e.err)
			changed(e.what)
		case _, ok := <-routes:
			if !ok {
				return ended("route")
			}
			changed("route")
		case _, ok := <-addrs:
			if !ok {
				return ended("addr")
			}
			changed("addr")
		case _, ok := <-links:
			if !ok {
				return ended("link")
			}
			changed("link")
		}
	}
}

func (p *linuxPlatform) CutUSB(a Adapter) error {
	if a.USBDevice == "" {
		return fmt.Errorf("cut %s off the bus: no usb device behind it", a.Name)
	}
	if err := setAuthorized(p.sysfs, a.USBDevice, "0"); err != nil {
		return fmt.Errorf("cut %s off the bus: %w", a.Name, err)
	}
	return nil
}

// RestoreUSB authorizes the device again. A device directory gone from
// sysfs (the device was unplugged) needs nothing: plugged in again, the
// device comes back authorized as the bus's authorized_default says.
func (p *linuxPlatform) RestoreUSB(dir string) error {
	clean := filepath.Clean(dir)
	devices := filepath.Join(filepath.Clean(p.sysfs), "devices") + string(filepath.Separator)
	if filepath.IsAbs(clean) && strings.HasPrefix(clean, devices) {
		if _, err := os.Lstat(clean); errors.Is(err, fs.ErrNotExist) {
			p.log.Info("usb device gone: nothing to authorize again", "device", clean)
			return nil
		}
	}
	if err := setAuthorized(p.sysfs, clean, "1"); err != nil {
		return fmt.Errorf("authorize usb device again: %w", err)
	}
	return nil
}
