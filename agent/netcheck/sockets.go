package netcheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	gnet "github.com/shirou/gopsutil/v3/net"
	"github.com/shirou/gopsutil/v3/process"
)

// Socket types as gopsutil reports them (syscall.SOCK_STREAM and
// SOCK_DGRAM, the same numbers on Linux and Windows).
const (
	sockStream = 1
	sockDgram  = 2
)

// listSockets lists every TCP and UDP socket, IPv4 and IPv6, with the
// process that holds it (gopsutil). The process name and user are looked
// up once per PID within the call; a process that is gone by then leaves
// them empty and does not fail the listing. A socket no process holds any
// more (closed between the two reads) has PID 0.
func listSockets(ctx context.Context) ([]Socket, error) {
	// Without uids: gopsutil would read every process's status for them;
	// the user comes from the per-PID lookup below.
	conns, err := gnet.ConnectionsWithoutUidsWithContext(ctx, "inet")
	if err != nil {
		return nil, fmt.Errorf("list sockets: %w", err)
	}
	return socketsFrom(ctx, conns)
}

// socketsFrom converts a listing, looking the processes up.
func socketsFrom(ctx context.Context, conns []gnet.ConnectionStat) ([]Socket, error) {
	out := make([]Socket, 0, len(conns))
	for _, c := range conns {
		if s, ok := socketFrom(c); ok {
			out = append(out, s)
		}
	}
	if err := nameProcesses(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// nameProcesses fills in the process name and user of each socket with a
// PID, looking each process up once (gopsutil). A process that is gone by
// then leaves both empty.
func nameProcesses(ctx context.Context, socks []Socket) error {
	procs := procCache{}
	for i := range socks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if socks[i].PID > 0 {
			p := procs.lookup(ctx, socks[i].PID)
			socks[i].Process, socks[i].User = p.name, p.user
		}
	}
	return nil
}

// socketFrom converts a gopsutil connection; ok is false for what is not
// a TCP or UDP socket with a parsable local address.
func socketFrom(c gnet.ConnectionStat) (Socket, bool) {
	var s Socket
	switch c.Type {
	case sockStream:
		s.Proto = "tcp"
	case sockDgram:
		s.Proto = "udp"
	default:
		return Socket{}, false
	}
	local, ok := addrPort(c.Laddr)
	if !ok {
		return Socket{}, false
	}
	s.Local = local
	if r, ok := addrPort(c.Raddr); ok && !(r.Addr().IsUnspecified() && r.Port() == 0) {
		s.Remote = r
	}
	s.State = c.Status
	s.PID = c.Pid
	return s, true
}

func addrPort(a gnet.Addr) (netip.AddrPort, bool) {
	if a.IP == "" {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(strings.Trim(a.IP, "[]"))
	if err != nil || a.Port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), true
}

type procInfo struct{ name, user string }

// procCache holds the processes looked up within one listing.
type procCache map[int32]procInfo

func (pc procCache) lookup(ctx context.Context, pid int32) procInfo {
	if p, ok := pc[pid]; ok {
		return p
	}
	var p procInfo
	if proc, err := process.NewProcessWithContext(ctx, pid); err == nil {
		// Either may fail when the process exits meanwhile: empty.
		p.name, _ = proc.NameWithContext(ctx)
		p.user, _ = proc.UsernameWithContext(ctx)
	}
	pc[pid] = p
	return p
}
