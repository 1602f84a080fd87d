package netcheck

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Adapter kinds, as NetworkAdapter.kind names them.
const (
	KindLoopback  = "loopback"
	KindEthernet  = "ethernet"
	KindWireless  = "wireless"
	KindUSB       = "usb"
	KindBluetooth = "bluetooth"
	KindVirtual   = "virtual"
	KindUnknown   = "unknown"
)

// Adapter is one network interface as the platform found it, classified.
type Adapter struct {
	Name         string
	Index        int
	HardwareAddr string
	Addrs        []netip.Prefix
	Up, Loopback bool
	// Kind is one of the Kind constants; KindUnknown when the platform
	// could not decide (reported, never ignored).
	Kind string
	// Reason says why the adapter has its kind, e.g. "usb ancestor 1-2,
	// interface class e0/01/03 (RNDIS)".
	Reason                      string
	Driver, VendorID, ProductID string
	// USBDevice is, on Linux, the sysfs directory of the USB device behind
	// a KindUSB adapter (its authorized attribute cuts it off the bus); on
	// Windows, the PnP instance id of the device (CutUSB disables it
	// through SetupAPI); empty otherwise.
	USBDevice string
}

// Route is one route of the terminal's routing tables.
type Route struct {
	Dst       netip.Prefix
	Gateway   netip.Addr
	Interface string
	Table     string
	// Type is the route's type as ip-route(8) names it: RouteUnicast,
	// RouteBlackhole, RouteUnreachable, RouteProhibit, "throw",
	// "multicast", … "" (Windows, which has no such types) counts as
	// unicast.
	Type string
}

// Route types (Route.Type). A route of type blackhole, unreachable or
// prohibit drops what it matches (RouteDrops): no traffic leaves through it.
const (
	RouteUnicast     = "unicast"
	RouteBlackhole   = "blackhole"
	RouteUnreachable = "unreachable"
	RouteProhibit    = "prohibit"
)

// RouteDrops says whether r drops the traffic it matches instead of
// sending it anywhere.
func RouteDrops(r Route) bool {
	switch r.Type {
	case RouteBlackhole, RouteUnreachable, RouteProhibit:
		return true
	}
	return false
}

// Socket is one TCP or UDP socket of the terminal.
type Socket struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Remote is the zero AddrPort for listeners and unconnected UDP
	// sockets.
	Local, Remote netip.AddrPort
	// State as gopsutil names it: "ESTABLISHED", "SYN_SENT", "LISTEN", …;
	// empty or "NONE" for UDP.
	State string
	PID   int32
	// Process and User are empty when the process exited before they were
	// looked up; the socket still counts.
	Process, User string
}

// DNSServer is one resolver in use and where it was read.
type DNSServer struct {
	Addr   netip.Addr
	Source string
}

// PlatformOptions configure NewPlatform.
type PlatformOptions struct {
	// SysfsRoot replaces "/sys" (tests: sysfs trees of real devices).
	SysfsRoot string
	// ResolvConf replaces the resolver files read on Linux
	// ("/etc/resolv.conf" and systemd-resolved's
	// "/run/systemd/resolve/resolv.conf").
	ResolvConf []string
	Logger     *slog.Logger
}

// Platform is what the OS tells the scanner (platform_linux.go,
// platform_windows.go).
type Platform interface {
	Adapters(ctx context.Context) ([]Adapter, error)
	Routes(ctx context.Context) ([]Route, error)
	Sockets(ctx context.Context) ([]Socket, error)
	DNS(ctx context.Context) ([]DNSServer, error)
	// Watch calls changed (with a short reason: "route", "addr", "link")
	// as soon as the OS announces a route, address or link change, until
	// ctx ends; it returns an error when it cannot watch.
	Watch(ctx context.Context, changed func(what string)) error
	// CutUSB deauthorizes the USB device behind a (Linux: authorized=0 on
	// its sysfs directory); RestoreUSB authorizes the device directory
	// again.
	CutUSB(a Adapter) error
	RestoreUSB(dir string) error
}

// Enforcer keeps the agent's own firewall rules: on Linux an nftables
// table (package nft), on Windows Windows Firewall rules (package winfw).
type Enforcer interface {
	// Mechanism names it, e.g. "nftables table inet mnguard".
	Mechanism() string
	// Apply installs or replaces every rule for p (p.Enforce is true);
	// idempotent, atomic where the OS allows.
	Apply(ctx context.Context, p *netpolicy.Policy) error
	// Check says whether exactly the rules for p are in place; detail
	// names what differs (drift: flushed, deleted, changed).
	Check(ctx context.Context, p *netpolicy.Policy) (inPlace bool, detail string, err error)
	// Remove deletes every rule it made; no error when none is there.
	Remove(ctx context.Context) error
	// Watch calls changed as soon as the firewall changes, until ctx
	// ends; it returns an error when it cannot watch (the manager then
	// polls Check).
	Watch(ctx context.Context, changed func()) error
}
