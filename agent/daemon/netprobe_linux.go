//go:build linux

package daemon

import (
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel socket states (include/net/tcp_states.h).
const (
	tcpListen = 10
	tcpClose  = 7 // an unconnected UDP socket
)

// diagLister lists sockets through sock_diag in the agent's network
// namespace: the kernel's dump, no /proc walk.
type diagLister struct{ h *netlink.Handle }

func newSocketLister() (socketLister, error) {
	h, err := netlink.NewHandle(unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return &diagLister{h: h}, nil
}

func (l *diagLister) close() { l.h.Close() }

func (l *diagLister) list() ([]probeSocket, error) {
	var out []probeSocket
	for _, q := range []struct {
		proto  string
		family uint8
	}{{"tcp", unix.AF_INET}, {"tcp", unix.AF_INET6}, {"udp", unix.AF_INET}, {"udp", unix.AF_INET6}} {
		var socks []*netlink.Socket
		var err error
		if q.proto == "tcp" {
			socks, err = l.h.SocketDiagTCP(q.family)
		} else {
			socks, err = l.h.SocketDiagUDP(q.family)
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag %s/%d: %w", q.proto, q.family, err)
		}
		for _, s := range socks {
			local, ok1 := diagAddrPort(s.ID.Source, s.ID.SourcePort)
			remote, ok2 := diagAddrPort(s.ID.Destination, s.ID.DestinationPort)
			if !ok1 || !ok2 {
				continue
			}
			ps := probeSocket{Proto: q.proto, Local: local, Inode: s.INode}
			if q.proto == "tcp" {
				ps.Listening = s.State == tcpListen
			} else {
				ps.Listening = s.State == tcpClose
			}
			if !(remote.Addr().IsUnspecified() && remote.Port() == 0) {
				ps.Remote = remote
			}
			out = append(out, ps)
		}
	}
	return out, nil
}

func diagAddrPort(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), port), true
}

// resolvFiles are the resolver files the network check reads.
func (d *Daemon) resolvFiles() []string {
	if f := d.opts.Config.Network.ResolvConf; f != "" {
		return []string{f}
	}
	return []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}
}

func fileID(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
