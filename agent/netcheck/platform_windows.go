//go:build windows

package netcheck

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	gnet "github.com/shirou/gopsutil/v3/net"
	"golang.org/x/sys/windows"
)

// windowsPlatform reads the network through IP Helper (win_iphlp_windows.go)
// and classifies adapters by their PnP device (win_classify_windows.go).
type windowsPlatform struct {
	log *slog.Logger
	// classKey replaces netClassKey (tests).
	classKey string
}

// NewPlatform returns the Windows platform. SysfsRoot and ResolvConf do
// not apply: adapters, their DNS servers and routes come from IP Helper.
func NewPlatform(o PlatformOptions) Platform {
	p := &windowsPlatform{log: o.Logger, classKey: netClassKey}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

func (p *windowsPlatform) Adapters(ctx context.Context) ([]Adapter, error) {
	was, err := getAdapters()
	if err != nil {
		return nil, fmt.Errorf("list adapters: %w", err)
	}
	out := make([]Adapter, 0, len(was))
	for _, w := range was {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out = append(out, p.adapter(w))
	}
	return out, nil
}

func (p *windowsPlatform) adapter(w winAdapter) Adapter {
	pnp, pnpErr := "", error(nil)
	if w.ifType != windows.IF_TYPE_SOFTWARE_LOOPBACK { // no PnP device
		pnp, pnpErr = pnpInstance(p.classKey, w.guid)
	}
	c := classifyWin(w.ifType, w.description, pnp, pnpErr)
	return Adapter{
		Name:         w.name,
		Index:        int(w.index),
		HardwareAddr: w.hardwareAddr,
		Addrs:        slices.Clone(w.addrs),
		Up:           w.up,
		Loopback:     c.kind == KindLoopback,
		Kind:         c.kind,
		Reason:       c.reason,
		Driver:       w.description,
		VendorID:     c.vendorID,
		ProductID:    c.productID,
		USBDevice:    c.usbDevice,
	}
}

// Routes lists the routing table, every row: the host routes Windows
// makes for its own addresses and broadcasts are judged by the findings
// (as the local table is on Linux), multicast and loopback by the policy.
func (p *windowsPlatform) Routes(ctx context.Context) ([]Route, error) {
	was, err := getAdapters()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[uint32]string{}
	for _, w := range was {
		names[w.index] = w.name
	}
	rows, err := getRoutes()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rows))
	for _, r := range rows {
		rt := Route{Dst: r.dst, Table: "main", Interface: names[r.index]}
		if rt.Interface == "" {
			rt.Interface = fmt.Sprintf("interface %d", r.index)
		}
		if r.nextHop.IsValid() && !r.nextHop.IsUnspecified() {
			rt.Gateway = r.nextHop
		}
		out = append(out, rt)
	}
	return out, nil
}

// Sockets lists through gopsutil's Connections (GetExtendedTcpTable and
// GetExtendedUdpTable, which carry the owning PID): its WithoutUids variant,
// which listSockets uses on Linux, is not implemented on Windows.
func (p *windowsPlatform) Sockets(ctx context.Context) ([]Socket, error) {
	conns, err := gnet.ConnectionsWithContext(ctx, "inet")
	if err != nil {
		return nil, fmt.Errorf("list sockets: %w", err)
	}
	return socketsFrom(ctx, conns)
}

// siteLocalDNS are the placeholders Windows lists as an adapter's IPv6 DNS
// servers when it has none (fec0:0:0:ffff::1 to 3, deprecated site-local):
// not servers anyone configured, and nothing answers there.
var siteLocalDNS = []netip.Addr{
	netip.MustParseAddr("fec0:0:0:ffff::1"),
	netip.MustParseAddr("fec0:0:0:ffff::2"),
	netip.MustParseAddr("fec0:0:0:ffff::3"),
}

// DNS lists the DNS servers of every adapter that is up, Source "adapter
// NAME".
func (p *windowsPlatform) DNS(ctx context.Context) ([]DNSServer, error) {
	was, err := getAdapters()
	if err != nil {
		return nil, fmt.Errorf("list DNS servers: %w", err)
	}
	var out []DNSServer
	for _, w := range was {
		if !w.up {
			continue
		}
		for _, a := range w.dns {
			if slices.Contains(siteLocalDNS, a) {
				continue
			}
			out = append(out, DNSServer{Addr: a, Source: "adapter " + w.name})
		}
	}
	return out, ctx.Err()
}

// Watch calls changed with "link", "route" or "addr" on each IP Helper
// notification until ctx ends.
func (p *windowsPlatform) Watch(ctx context.Context, changed func(what string)) error {
	w := &winWatch{ch: make(chan string, 8)}
	watchersMu.Lock()
	watchers[w] = struct{}{}
	watchersMu.Unlock()
	defer func() {
		watchersMu.Lock()
		delete(watchers, w)
		watchersMu.Unlock()
	}()
	cancel, err := notifyRegister()
	if err != nil {
		return fmt.Errorf("network change notifications: %w", err)
	}
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case what := <-w.ch:
			changed(what)
		}
	}
}

// CutUSB disables the USB device behind a (Adapter.USBDevice, its PnP
// instance id) through SetupAPI, as Device Manager does: the adapter goes
// away until RestoreUSB enables the device again.
func (p *windowsPlatform) CutUSB(a Adapter) error {
	if a.USBDevice == "" {
		return fmt.Errorf("cut %s off: no usb device behind it", a.Name)
	}
	if err := setDeviceState(a.USBDevice, windows.DICS_DISABLE); err != nil {
		return fmt.Errorf("cut %s off: disable %w", a.Name, err)
	}
	return nil
}

// RestoreUSB enables the USB network device whose PnP instance id is id.
func (p *windowsPlatform) RestoreUSB(id string) error {
	if err := setDeviceState(id, windows.DICS_ENABLE); err != nil {
		return fmt.Errorf("enable usb network device again: %w", err)
	}
	return nil
}
