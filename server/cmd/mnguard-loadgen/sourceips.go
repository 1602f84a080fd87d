package main

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxSourceIPs bounds a --source-ips list: more addresses than terminals
// are useless, and a typo like 10.0.0.0-10.255.255.255 should not allocate
// sixteen million of them.
const maxSourceIPs = 1 << 16

// parseSourceIPs parses --source-ips: a comma-separated list of IPv4 or IPv6
// addresses and inclusive ranges FIRST-LAST of one family, e.g.
// "127.0.0.2-127.0.0.250" or "127.0.1.1,127.0.2.1-127.0.2.9". Each address
// gives the terminals dialing from it their own 28,000 ephemeral ports.
func parseSourceIPs(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("--source-ips %q: empty element", s)
		}
		first, last, isRange := strings.Cut(part, "-")
		a, err := parseIP(strings.TrimSpace(first))
		if err != nil {
			return nil, fmt.Errorf("--source-ips %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseIP(strings.TrimSpace(last)); err != nil {
				return nil, fmt.Errorf("--source-ips %q: %w", s, err)
			}
			if a.Is4() != b.Is4() {
				return nil, fmt.Errorf("--source-ips %q: range %s mixes IPv4 and IPv6", s, part)
			}
			if b.Less(a) {
				return nil, fmt.Errorf("--source-ips %q: range %s ends before it starts", s, part)
			}
		}
		for ip := a; ; ip = ip.Next() {
			if len(out) >= maxSourceIPs {
				return nil, fmt.Errorf("--source-ips %q: more than %d addresses", s, maxSourceIPs)
			}
			if ip.IsMulticast() {
				return nil, fmt.Errorf("--source-ips %q: range %s holds multicast addresses", s, part)
			}
			out = append(out, ip)
			if ip == b {
				break
			}
		}
	}
	return out, nil
}

func parseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: zoned addresses are not supported", s)
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%q cannot be a source address", s)
	}
	return ip.Unmap(), nil
}
