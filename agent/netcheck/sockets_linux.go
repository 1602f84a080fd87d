//go:build linux

package netcheck

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// diagSockets lists every TCP and UDP socket, IPv4 and IPv6, of the
// namespace h is in through sock_diag (the kernel's socket dump, as ss(8)
// reads it) and finds the process holding each in one pass over
// /proc/*/fd; names and users come from gopsutil, once per PID. It does
// what listSockets does through gopsutil's /proc/net parsing, which with
// 10,000 sockets costs several times the CPU (BenchmarkScanSockets5000).
// A socket no process holds (TIME_WAIT, or closed meanwhile) has PID 0.
func diagSockets(ctx context.Context, h *netlink.Handle) ([]Socket, error) {
	out, err := diagList(ctx, h)
	if err != nil {
		return nil, err
	}
	if err := nameProcesses(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// diagList lists the sockets and their PIDs, not yet named.
func diagList(ctx context.Context, h *netlink.Handle) ([]Socket, error) {
	owners, err := socketOwners(ctx)
	if err != nil {
		return nil, err
	}
	var out []Socket
	for _, q := range []struct {
		proto  string
		family uint8
	}{{"tcp", unix.AF_INET}, {"tcp", unix.AF_INET6}, {"udp", unix.AF_INET}, {"udp", unix.AF_INET6}} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		socks, err := retryDump(fmt.Sprintf("sock_diag %s%s", q.proto, map[uint8]string{unix.AF_INET: "4", unix.AF_INET6: "6"}[q.family]),
			func() ([]*netlink.Socket, error) {
				if q.proto == "tcp" {
					return h.SocketDiagTCP(q.family)
				}
				return h.SocketDiagUDP(q.family)
			})
		if err != nil {
			return nil, err
		}
		for _, s := range socks {
			local, ok1 := diagAddr(s.ID.Source, s.ID.SourcePort)
			remote, ok2 := diagAddr(s.ID.Destination, s.ID.DestinationPort)
			if !ok1 || !ok2 {
				continue
			}
			so := Socket{Proto: q.proto, Local: local, PID: owners[s.INode]}
			if !(remote.Addr().IsUnspecified() && remote.Port() == 0) {
				so.Remote = remote
			}
			if q.proto == "tcp" {
				so.State = tcpState(s.State)
			} else {
				so.State = "NONE"
			}
			if s.INode == 0 {
				so.PID = 0
			}
			out = append(out, so)
		}
	}
	return out, nil
}

func diagAddr(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), port), true
}

// tcpStates are the kernel's TCP states (include/net/tcp_states.h) as
// gopsutil names them.
var tcpStates = [...]string{1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}

func tcpState(s uint8) string {
	if int(s) < len(tcpStates) && tcpStates[s] != "" {
		return tcpStates[s]
	}
	return "UNKNOWN(" + strconv.Itoa(int(s)) + ")"
}

// socketOwners maps socket inodes to the first process (lowest PID)
// holding them, from one pass over /proc/*/fd. Processes that exit or
// cannot be read during the pass are skipped.
func socketOwners(ctx context.Context) (map[uint32]int32, error) {
	proc, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := proc.Readdirnames(-1)
	proc.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	owners := make(map[uint32]int32)
	buf := make([]byte, 64)
	for _, n := range names {
		pid, err := strconv.ParseInt(n, 10, 32)
		if err != nil || pid <= 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir := "/proc/" + n + "/fd/"
		d, err := os.Open(dir)
		if err != nil {
			continue // gone, or not ours to read
		}
		fds, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			continue
		}
		for _, fd := range fds {
			nb, err := unix.Readlink(dir+fd, buf)
			if err != nil {
				continue // closed meanwhile, or the process is gone
			}
			l := string(buf[:nb])
			ino, ok := strings.CutPrefix(l, "socket:[")
			if !ok {
				continue
			}
			// sock_diag reports the inode's low 32 bits.
			v, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64)
			if err != nil {
				continue
			}
			if old, ok := owners[uint32(v)]; !ok || int32(pid) < old {
				owners[uint32(v)] = int32(pid)
			}
		}
	}
	return owners, nil
}
