package netcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/mnguard/mnguard/internal/limitread"
)

// maxResolvConf bounds a resolv.conf read; real ones are a few hundred
// bytes.
const maxResolvConf = 64 << 10

// parseResolvConf returns the addresses of a resolv.conf's nameserver
// lines, in order, duplicates kept once. Comments start with '#' or ';'
// (also after the address, as glibc reads it). A nameserver line whose
// address does not parse is left out and named in the error, together
// with the servers that did parse: glibc ignores such a line too, but it
// is not silently dropped here.
func parseResolvConf(data []byte) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errs []error
	n := 0
	for line := range bytes.Lines(data) {
		n++
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		fields := strings.Fields(s)
		if fields[0] != "nameserver" {
			continue
		}
		if len(fields) < 2 || fields[1][0] == '#' || fields[1][0] == ';' {
			errs = append(errs, fmt.Errorf("line %d: nameserver without an address", n))
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: nameserver %s: not an IP address", n, clip(fields[1])))
			continue
		}
		a = a.Unmap()
		if !containsAddr(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs, errors.Join(errs...)
}

func containsAddr(addrs []netip.Addr, a netip.Addr) bool {
	for _, b := range addrs {
		if b == a {
			return true
		}
	}
	return false
}

// resolvedStub reports whether a is systemd-resolved's local stub
// listener (127.0.0.53, or 127.0.0.54 in proxy mode).
func resolvedStub(a netip.Addr) bool {
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 53}) || a == netip.AddrFrom4([4]byte{127, 0, 0, 54})
}

// readResolvConf reads and parses one resolv.conf. A missing file is no
// servers and ok false. bad names the nameserver lines that did not parse
// (the resolver ignores them too); err says the file could not be read.
func readResolvConf(name string) (addrs []netip.Addr, ok bool, bad, err error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil, nil
	}
	if err != nil {
		return nil, false, nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	// Its errors name the file already ("read NAME: …").
	data, err := limitread.From(f, name, maxResolvConf)
	if err != nil {
		return nil, false, nil, err
	}
	addrs, bad = parseResolvConf(data)
	if bad != nil {
		bad = fmt.Errorf("%s: %w", name, bad)
	}
	return addrs, true, bad, nil
}

// defaultResolvConf are the resolver files read on Linux: the system's
// and systemd-resolved's list of upstream servers.
var defaultResolvConf = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// dnsServers reads the resolvers in use from files: files[0] is the
// system's resolv.conf; when it points at systemd-resolved's stub, the
// upstream servers are read from files[1] (resolved's own resolv.conf),
// and further files as well. The stub itself is reported too.
//
// err means the servers in use are not known: a file could not be read,
// or the stub is in use and its upstream file is missing. bad names
// nameserver lines that did not parse: the resolver skips them, so the
// servers returned are still those in use (the caller logs bad).
func dnsServers(files []string) (servers []DNSServer, bad, err error) {
	if len(files) == 0 {
		files = defaultResolvConf
	}
	var errs, bads []error
	addrs, _, b, err := readResolvConf(files[0])
	if err != nil {
		errs = append(errs, err)
	}
	bads = append(bads, b)
	stub := false
	for _, a := range addrs {
		servers = append(servers, DNSServer{Addr: a, Source: files[0]})
		stub = stub || resolvedStub(a)
	}
	if stub {
		if len(files) < 2 {
			errs = append(errs, fmt.Errorf("%s points at systemd-resolved's stub, and no file of its upstream servers is configured", files[0]))
		}
		for _, name := range files[1:] {
			up, ok, b, err := readResolvConf(name)
			if err != nil {
				errs = append(errs, err)
			}
			bads = append(bads, b)
			if !ok && err == nil {
				errs = append(errs, fmt.Errorf("%s points at systemd-resolved's stub, but %s does not exist: its upstream servers are unknown", files[0], name))
			}
			for _, a := range up {
				servers = append(servers, DNSServer{Addr: a, Source: name + " (systemd-resolved)"})
			}
		}
	}
	return servers, errors.Join(bads...), errors.Join(errs...)
}
