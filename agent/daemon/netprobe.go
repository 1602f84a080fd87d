package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// netProbeEvery is how often the probe looks at the sockets and resolver
// files: what the OS does not announce (a connection opened or closed, a
// resolv.conf rewritten) reaches the collector within about this plus a
// scan.
const netProbeEvery = time.Second

// probeSocket is one socket as the probe sees it: no process (finding it
// is the costly part of a scan).
type probeSocket struct {
	Proto         string // "tcp", "udp"
	Local, Remote netip.AddrPort
	// Listening: a TCP listener or an unconnected UDP socket.
	Listening bool
	// Inode is 0 for a socket no process holds (TIME_WAIT).
	Inode uint32
}

// socketLister lists the namespace's sockets cheaply (sock_diag).
type socketLister interface {
	list() ([]probeSocket, error)
	close()
}

// suspects is the set of sockets that may be findings under p: connected
// to a remote p does not allow, or listening on an address reachable from
// outside. It mirrors netcheck's evaluation coarsely and errs towards
// scanning (a socket counted for nothing costs one scan). Keys include the
// inode, so that a socket its process let go of (TIME_WAIT) changes the
// set too. Without a policy no socket is a finding: none is suspect.
func suspects(socks []probeSocket, p *netpolicy.Policy) map[probeSocket]bool {
	out := make(map[probeSocket]bool)
	if p == nil {
		return out
	}
	for _, s := range socks {
		s.Local = netip.AddrPortFrom(s.Local.Addr().Unmap(), s.Local.Port())
		s.Remote = netip.AddrPortFrom(s.Remote.Addr().Unmap(), s.Remote.Port())
		r := s.Remote
		if r.IsValid() && !r.Addr().IsUnspecified() && r.Port() != 0 {
			if !p.Allows(r.Addr(), s.Proto, r.Port()) {
				out[s] = true
			}
			continue
		}
		if !s.Listening {
			continue
		}
		if a := s.Local.Addr(); a.IsLoopback() || a.IsLinkLocalUnicast() {
			continue
		}
		out[s] = true
	}
	return out
}

// fileStamp identifies a file's version cheaply.
type fileStamp struct {
	exists bool
	mod    time.Time
	size   int64
	// sys distinguishes a file replaced by a rename within the same
	// modification time and size (the inode on Unix).
	sys uint64
}

// stampFiles stats each path.
func stampFiles(paths []string) []fileStamp {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		out[i] = fileStamp{exists: true, mod: fi.ModTime(), size: fi.Size(), sys: fileID(fi)}
	}
	return out
}

// probeNetwork asks the network check for a full scan as soon as a socket
// that may be a finding opens or goes away, or a resolver file changes:
// the OS announces routes, addresses and links (the check's own watch),
// not these. It looks every netProbeEvery until ctx ends.
func (d *Daemon) probeNetwork(ctx context.Context) {
	lister, err := newSocketLister()
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			d.log.Warn("socket probe unavailable: connections are checked at every report interval and network change only", "err", err)
		}
	} else {
		defer lister.close()
	}
	resolv := d.resolvFiles()
	lastFiles := stampFiles(resolv)
	// Compared with nothing at first: a suspect socket already open when
	// the probe starts may have opened after the check's first scan.
	last := map[probeSocket]bool{}
	failed := false
	t := time.NewTicker(netProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		why := ""
		if files := stampFiles(resolv); !slices.Equal(files, lastFiles) {
			lastFiles, why = files, "resolver file"
		}
		pol := d.probePolicy()
		if pol == nil {
			// No socket is a finding without a policy: nothing to list.
			// SetPolicy scans at once when one comes.
			clear(last)
		} else if lister != nil {
			socks, err := lister.list()
			switch {
			case err != nil:
				if !failed {
					d.log.Warn("socket probe failed: connections are checked at every report interval and network change only", "err", err)
				}
				failed = true
			default:
				failed = false
				cur := suspects(socks, pol)
				if !sameKeys(cur, last) && why == "" {
					why = "socket"
				}
				last = cur
			}
		}
		if why != "" {
			d.log.Debug("network scan asked for", "why", why)
			if err := d.network.Scan(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("network scan", "err", err)
			}
		}
	}
}

func sameKeys(a, b map[probeSocket]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// probePolicy is the network policy in force with the collector's
// addresses, as the check evaluates it.
func (d *Daemon) probePolicy() *netpolicy.Policy {
	d.mu.Lock()
	p := d.netPolicy
	d.mu.Unlock()
	return p.WithCollector(d.collectorAddrs.get()...)
}
