package netcheck

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Finding kinds, as NetworkFinding.kind names them.
const (
	FindingDefaultRoute     = "default_route"
	FindingRoute            = "route"
	FindingSocket           = "socket"
	FindingListener         = "listener"
	FindingDNS              = "dns"
	FindingWireless         = "wireless"
	FindingUSBAdapter       = "usb_adapter"
	FindingBluetoothAdapter = "bluetooth_adapter"
	FindingUnknownInterface = "unknown_interface"
	FindingEnforcement      = "enforcement"
	FindingScanError        = "scan_error"
)

// Scan parts, as PartError.Part and the posture's scan_errors name them.
const (
	PartAdapters = "adapters"
	PartRoutes   = "routes"
	PartSockets  = "sockets"
	PartDNS      = "dns"
)

// Scan is what one scan of the terminal gathered from the Platform.
type Scan struct {
	Adapters []Adapter
	Routes   []Route
	Sockets  []Socket
	DNS      []DNSServer
	// Errors holds the parts that could not be gathered; what the other
	// parts found is still evaluated.
	Errors []PartError
}

// PartError is one part of a scan that failed.
type PartError struct {
	Part string // PartAdapters, PartRoutes, PartSockets, PartDNS
	Err  error
}

func (e PartError) String() string {
	if e.Err == nil {
		return e.Part + ": failed"
	}
	return e.Part + ": " + e.Err.Error()
}

// Finding is one thing that breaks isolation (NetworkFinding without
// first_seen, which the Manager keeps).
type Finding struct {
	// ID is stable for one cause across scans: the kind and what
	// identifies the cause (not its changing state), hashed short.
	ID     string
	Kind   string
	Detail string
	// Process, PID and User of the socket's owner, when known.
	Process string
	PID     int32
	User    string
	// Interface and Address the finding concerns, when any.
	Interface string
	Address   string
}

// findingID hashes kind and parts into a short, stable identifier.
func findingID(kind string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return kind + "-" + hex.EncodeToString(h.Sum(nil)[:6])
}

// Evaluate checks one scan against the policy p and returns what breaks
// isolation, sorted by kind and ID, one finding per ID. It is pure: the
// same scan and policy give the same findings.
//
// enforced says that the agent's own rules for p are in place: inbound
// traffic from outside the policy is then dropped, so a listening socket
// is no longer reachable from outside and is not a finding.
//
// What is a finding:
//
//   - a default route (0.0.0.0/0, ::/0) in any table: "default_route";
//     routes that drop what they match (RouteDrops: blackhole,
//     unreachable, prohibit) send nothing out and are never findings;
//   - a route whose destination is not inside the policy
//     (netpolicy.Policy.AllowsRoute): "route". Host routes to the terminal's
//     own addresses and the broadcast addresses of its attached networks
//     (Linux's local table, Windows' host routes) route nothing out and are
//     judged through the address they belong to;
//   - an address on any adapter but loopback (virtual ones too: a tunnel
//     or a bridge reaches a network as well as a card does) whose network
//     is not inside the policy: "route" as well, with the interface and
//     address set, unless a route to exactly that network is already
//     reported (the kernel's connected route usually is);
//   - a TCP socket in any state with a remote (established, connecting,
//     closing, time-wait: each is traffic that happened) and a connected
//     UDP socket whose remote address and port the policy does not allow
//     (netpolicy.Policy.Allows): "socket";
//   - a listening TCP socket or an unconnected UDP socket bound to any
//     address but loopback and link-local (the wildcard included), unless
//     enforcement is in place: "listener", one per protocol and local
//     address (the processes sharing it are one exposure);
//   - a DNS server in use that the policy does not list, loopback stubs
//     excepted (they forward to the upstreams, which are listed too):
//     "dns";
//   - a wireless, USB or Bluetooth network adapter, up or down:
//     "wireless", "usb_adapter", "bluetooth_adapter"; an adapter of any
//     other kind than loopback, ethernet and virtual — undecided, empty or
//     unheard of — is "unknown_interface" (fail closed);
//   - each part of the scan that failed: "scan_error" (isolation is then
//     not proven).
//
// With p nil (no policy yet) only the kinds that need no policy are
// reported: the adapter kinds and scan errors. The implicit allowances
// (loopback, link-local, multicast) are never findings.
func Evaluate(scan Scan, p *netpolicy.Policy, enforced bool) []Finding {
	e := evaluator{p: p, seen: make(map[string]bool)}
	e.adapters(scan.Adapters)
	for _, pe := range scan.Errors {
		e.add(Finding{ID: findingID(FindingScanError, pe.Part), Kind: FindingScanError, Detail: pe.String()})
	}
	if p != nil {
		e.routes(scan.Routes, scan.Adapters)
		e.sockets(scan.Sockets, scan.Adapters, enforced)
		e.dns(scan.DNS)
	}
	slices.SortFunc(e.out, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.ID, b.ID))
	})
	return e.out
}

type evaluator struct {
	p    *netpolicy.Policy
	out  []Finding
	seen map[string]bool
}

func (e *evaluator) add(f Finding) {
	if e.seen[f.ID] {
		return
	}
	e.seen[f.ID] = true
	e.out = append(e.out, f)
}

func (e *evaluator) adapters(as []Adapter) {
	for _, a := range as {
		var kind, what string
		switch a.Kind {
		case KindLoopback, KindEthernet, KindVirtual:
			continue
		case KindWireless:
			kind, what = FindingWireless, "wireless adapter"
		case KindUSB:
			kind, what = FindingUSBAdapter, "USB network adapter"
		case KindBluetooth:
			kind, what = FindingBluetoothAdapter, "Bluetooth network adapter"
		default:
			kind, what = FindingUnknownInterface, "interface of undecided kind"
			if a.Kind != "" && a.Kind != KindUnknown {
				what = fmt.Sprintf("interface of unknown kind %q", a.Kind)
			}
		}
		var b strings.Builder
		b.WriteString(what)
		b.WriteByte(' ')
		b.WriteString(a.Name)
		if a.VendorID != "" || a.ProductID != "" {
			fmt.Fprintf(&b, " %s:%s", a.VendorID, a.ProductID)
		}
		if a.Driver != "" {
			fmt.Fprintf(&b, " driver %s", a.Driver)
		}
		if a.Reason != "" {
			fmt.Fprintf(&b, " (%s)", a.Reason)
		}
		if !a.Up {
			b.WriteString(", down")
		}
		e.add(Finding{
			ID:        findingID(kind, a.Name, a.HardwareAddr),
			Kind:      kind,
			Detail:    b.String(),
			Interface: a.Name,
			Address:   a.HardwareAddr,
		})
	}
}

// attached says whether a is one of the terminal's own addresses or the
// broadcast address of one of its attached IPv4 networks.
func attached(a netip.Addr, as []Adapter) bool {
	for _, ad := range as {
		for _, pf := range ad.Addrs {
			if pf.Addr().Unmap().WithZone("") == a.WithZone("") {
				return true
			}
			if a.Is4() && pf.Addr().Is4() && pf.Bits() < 31 && broadcast(pf) == a {
				return true
			}
		}
	}
	return false
}

// broadcast returns the IPv4 broadcast address of the network of pf.
func broadcast(pf netip.Prefix) netip.Addr {
	b := pf.Masked().Addr().As4()
	host := uint32(1)<<(32-pf.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

var limitedBroadcast = netip.MustParsePrefix("255.255.255.255/32")

func routeDetail(prefix string, r Route) string {
	var b strings.Builder
	b.WriteString(prefix)
	if r.Dst.IsValid() {
		b.WriteString(r.Dst.String())
	} else {
		b.WriteString("(unreadable destination)")
	}
	if r.Gateway.IsValid() && !r.Gateway.IsUnspecified() {
		b.WriteString(" via ")
		b.WriteString(r.Gateway.String())
	}
	if r.Interface != "" {
		b.WriteString(" dev ")
		b.WriteString(r.Interface)
	}
	if r.Table != "" {
		b.WriteString(" table ")
		b.WriteString(r.Table)
	}
	return b.String()
}

func gw(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (e *evaluator) routes(rs []Route, as []Adapter) {
	reported := make(map[netip.Prefix]bool)
	for _, r := range rs {
		if RouteDrops(r) {
			// Blackhole, unreachable, prohibit: nothing leaves through
			// it (`ip route add blackhole default` isolates, if anything).
			continue
		}
		id := []string{r.Table, r.Dst.String(), gw(r.Gateway), r.Interface}
		switch {
		case r.Dst.IsValid() && r.Dst.Bits() == 0:
			e.add(Finding{
				ID:        findingID(FindingDefaultRoute, id...),
				Kind:      FindingDefaultRoute,
				Detail:    routeDetail("default route ", r),
				Interface: r.Interface,
				Address:   gw(r.Gateway),
			})
			reported[r.Dst.Masked()] = true
		case !r.Dst.IsValid():
			e.add(Finding{
				ID:        findingID(FindingRoute, id...),
				Kind:      FindingRoute,
				Detail:    routeDetail("route to ", r),
				Interface: r.Interface,
			})
		default:
			dst := unmapPrefix(r.Dst)
			if dst.IsSingleIP() && (attached(dst.Addr(), as) || dst == limitedBroadcast) {
				continue
			}
			if e.p.AllowsRoute(dst.Masked()) {
				continue
			}
			e.add(Finding{
				ID:        findingID(FindingRoute, id...),
				Kind:      FindingRoute,
				Detail:    routeDetail("route outside the policy to ", r),
				Interface: r.Interface,
				Address:   dst.String(),
			})
			reported[dst.Masked()] = true
		}
	}
	for _, a := range as {
		if a.Kind == KindLoopback || a.Loopback {
			continue
		}
		for _, pf := range a.Addrs {
			if !pf.IsValid() {
				continue
			}
			u := unmapPrefix(pf)
			if netpolicy.Implicit(u.Addr()) {
				continue
			}
			network := u.Masked()
			if reported[network] || e.p.AllowsRoute(network) {
				continue
			}
			e.add(Finding{
				ID:        findingID(FindingRoute, "addr", a.Name, pf.String()),
				Kind:      FindingRoute,
				Detail:    fmt.Sprintf("address %s on %s is in a network outside the policy", pf, a.Name),
				Interface: a.Name,
				Address:   pf.String(),
			})
		}
	}
}

// ifaceOf names the adapter that holds a, or "".
func ifaceOf(a netip.Addr, as []Adapter) string {
	if !a.IsValid() || a.IsUnspecified() {
		return ""
	}
	for _, ad := range as {
		for _, pf := range ad.Addrs {
			if pf.Addr().Unmap().WithZone("") == a.WithZone("") {
				return ad.Name
			}
		}
	}
	return ""
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix (::ffff:192.0.2.0/120)
// into its IPv4 form; other prefixes are returned as they are.
func unmapPrefix(pf netip.Prefix) netip.Prefix {
	if !pf.Addr().Is4In6() || pf.Bits() < 96 {
		return pf
	}
	return netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// hasRemote says whether s is connected to a remote: a valid, specified
// address and a port.
// closingStates are the TCP states of a connection already closed by one
// side, as gopsutil names them.
var closingStates = map[string]bool{
	"TIME_WAIT": true, "FIN_WAIT1": true, "FIN_WAIT2": true, "CLOSING": true, "LAST_ACK": true, "CLOSE": true,
}

func hasRemote(s Socket) bool {
	return s.Remote.IsValid() && !s.Remote.Addr().IsUnspecified() && s.Remote.Port() != 0
}

func (e *evaluator) sockets(ss []Socket, as []Adapter, enforced bool) {
	// Listeners: one finding per protocol and local address; the lowest
	// PID that holds it names the process.
	type lkey struct {
		proto string
		local netip.AddrPort
	}
	listeners := make(map[lkey]Socket)
	var order []lkey
	// Closing sockets no process holds any more (TIME_WAIT after the
	// terminal hung up): one finding per protocol and remote address, not
	// one per local port, or every short connection would be its own
	// event for the minute the kernel keeps it.
	type ckey struct {
		proto  string
		remote netip.Addr
	}
	closed := make(map[ckey]int)
	var closedOrder []ckey
	for _, s := range ss {
		proto := strings.ToLower(s.Proto)
		local, remote := unmap(s.Local), unmap(s.Remote)
		state := strings.ToUpper(s.State)
		if hasRemote(s) {
			if e.p.Allows(remote.Addr(), proto, remote.Port()) {
				continue
			}
			if s.PID == 0 && closingStates[state] {
				k := ckey{proto, remote.Addr()}
				if closed[k] == 0 {
					closedOrder = append(closedOrder, k)
				}
				closed[k]++
				continue
			}
			detail := fmt.Sprintf("%s %s → %s", proto, local, remote)
			if state != "" && state != "NONE" {
				detail += " " + strings.ToLower(state)
			}
			e.add(Finding{
				ID:        findingID(FindingSocket, proto, local.String(), remote.String(), strconv.FormatInt(int64(s.PID), 10)),
				Kind:      FindingSocket,
				Detail:    detail,
				Process:   s.Process,
				PID:       s.PID,
				User:      s.User,
				Interface: ifaceOf(local.Addr(), as),
				Address:   remote.String(),
			})
			continue
		}
		if proto == "tcp" && state != "LISTEN" {
			continue // bound or closed, talking to no one
		}
		if enforced {
			continue
		}
		if local.IsValid() && (local.Addr().IsLoopback() || local.Addr().IsLinkLocalUnicast()) {
			continue
		}
		k := lkey{proto, local}
		if old, ok := listeners[k]; ok {
			if old.PID == 0 || (s.PID != 0 && s.PID < old.PID) {
				listeners[k] = s
			}
			continue
		}
		listeners[k] = s
		order = append(order, k)
	}
	for _, k := range closedOrder {
		e.add(Finding{
			ID:      findingID(FindingSocket, k.proto, "closed", k.remote.String()),
			Kind:    FindingSocket,
			Detail:  fmt.Sprintf("%s connections to %s recently closed (sockets closing: %d, no process holds them)", k.proto, k.remote, closed[k]),
			Address: k.remote.String(),
		})
	}
	for _, k := range order {
		s := listeners[k]
		where := k.local.String()
		if !k.local.IsValid() {
			where = "an unknown address"
		}
		what := "listening on"
		if k.proto == "udp" {
			what = "bound to"
		}
		e.add(Finding{
			ID:        findingID(FindingListener, k.proto, k.local.String()),
			Kind:      FindingListener,
			Detail:    fmt.Sprintf("%s %s %s, reachable from outside the policy (enforcement not in place)", k.proto, what, where),
			Process:   s.Process,
			PID:       s.PID,
			User:      s.User,
			Interface: ifaceOf(k.local.Addr(), as),
			Address:   where,
		})
	}
}

func (e *evaluator) dns(ds []DNSServer) {
	for _, d := range ds {
		a := d.Addr.Unmap()
		if a.IsValid() && a.IsLoopback() {
			continue
		}
		if a.IsValid() && e.p.AllowsDNS(a) {
			continue
		}
		addr := a.String()
		if !a.IsValid() {
			addr = "(unreadable address)"
		}
		detail := "DNS server " + addr + " outside the policy"
		if d.Source != "" {
			detail += " (from " + d.Source + ")"
		}
		e.add(Finding{
			ID:      findingID(FindingDNS, addr),
			Kind:    FindingDNS,
			Detail:  detail,
			Address: addr,
		})
	}
}
