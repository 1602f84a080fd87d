package nft

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// IP protocol numbers of the port rules.
const (
	protoTCP = 6
	protoUDP = 17
)

// portRange is an inclusive range of ports of one IP protocol.
type portRange struct {
	proto       uint8
	first, last uint16
}

// portedNet is an allowed network with its port ranges.
type portedNet struct {
	prefix netip.Prefix
	ports  []portRange
}

// box is one element of a set keyed by address . protocol . port: every
// address of addrs on every port of ports.
type box struct {
	addrs addrRange
	ports portRange
}

func (b box) String() string {
	proto := fmt.Sprint(b.ports.proto)
	switch b.ports.proto {
	case protoTCP:
		proto = "tcp"
	case protoUDP:
		proto = "udp"
	}
	port := fmt.Sprint(b.ports.first)
	if b.ports.last != b.ports.first {
		port += fmt.Sprintf("-%d", b.ports.last)
	}
	return b.addrs.String() + " . " + proto + " . " + port
}

func compareBoxes(a, b box) int {
	return cmp.Or(cmp.Compare(a.ports.proto, b.ports.proto), a.addrs.first.Compare(b.addrs.first),
		a.addrs.last.Compare(b.addrs.last), cmp.Compare(a.ports.first, b.ports.first),
		cmp.Compare(a.ports.last, b.ports.last))
}

// portBoxes turns networks with ports (all of one family) into boxes that
// do not overlap — the kernel's set of concatenated ranges refuses
// overlapping elements, and networks may nest (10.0.0.0/8 on tcp/443,
// 10.1.0.0/16 on tcp/80). The address space is cut at every network's
// bounds; each piece gets the union of the ports of the networks that
// hold it; neighbouring pieces with the same ports are joined again.
func portBoxes(nets []portedNet) []box {
	if len(nets) == 0 {
		return nil
	}
	var bounds []netip.Addr
	for _, n := range nets {
		r := prefixRange(n.prefix)
		bounds = append(bounds, r.first)
		if next := r.last.Next(); next.IsValid() {
			bounds = append(bounds, next)
		}
	}
	slices.SortFunc(bounds, netip.Addr.Compare)
	bounds = slices.Compact(bounds)
	top := maxAddr(bounds[0].Is6())

	type piece struct {
		addrs addrRange
		ports []portRange
	}
	var pieces []piece
	for i, lo := range bounds {
		hi := top
		if i+1 < len(bounds) {
			hi = bounds[i+1].Prev()
		}
		var ports []portRange
		for _, n := range nets {
			if n.prefix.Contains(lo) {
				ports = append(ports, n.ports...)
			}
		}
		if len(ports) == 0 {
			continue
		}
		ports = mergePorts(ports)
		if k := len(pieces); k > 0 && pieces[k-1].addrs.last.Next() == lo && slices.Equal(pieces[k-1].ports, ports) {
			pieces[k-1].addrs.last = hi
			continue
		}
		pieces = append(pieces, piece{addrRange{lo, hi}, ports})
	}
	var out []box
	for _, p := range pieces {
		for _, r := range p.ports {
			out = append(out, box{p.addrs, r})
		}
	}
	// Join boxes of the same ports on neighbouring pieces (10.0.0.0/8 on
	// udp/53 stays one element when a network inside it adds tcp/80).
	// Still disjoint: inside each piece its port ranges are.
	slices.SortFunc(out, func(a, b box) int {
		return cmp.Or(cmp.Compare(a.ports.proto, b.ports.proto), cmp.Compare(a.ports.first, b.ports.first),
			cmp.Compare(a.ports.last, b.ports.last), a.addrs.first.Compare(b.addrs.first))
	})
	joined := out[:0]
	for _, b := range out {
		if k := len(joined); k > 0 && joined[k-1].ports == b.ports && joined[k-1].addrs.last.Next() == b.addrs.first {
			joined[k-1].addrs.last = b.addrs.last
			continue
		}
		joined = append(joined, b)
	}
	slices.SortFunc(joined, compareBoxes)
	return joined
}

// mergePorts sorts port ranges and joins those of one protocol that
// overlap or touch.
func mergePorts(rs []portRange) []portRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b portRange) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.first, b.first), cmp.Compare(a.last, b.last))
	})
	var out []portRange
	for _, r := range rs {
		if k := len(out); k > 0 && out[k-1].proto == r.proto && int(r.first) <= int(out[k-1].last)+1 {
			out[k-1].last = max(out[k-1].last, r.last)
			continue
		}
		out = append(out, r)
	}
	return out
}

func maxAddr(six bool) netip.Addr {
	if six {
		return netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
}

// boxKeys are the key and key end of a box's set element: the address,
// the protocol and the port, each padded to 4 bytes (nftables registers).
func boxKeys(b box) (key, keyEnd []byte) {
	enc := func(a netip.Addr, port uint16) []byte {
		k := a.AsSlice()
		k = append(k, b.ports.proto, 0, 0, 0)
		k = binary.BigEndian.AppendUint16(k, port)
		return append(k, 0, 0)
	}
	return enc(b.addrs.first, b.ports.first), enc(b.addrs.last, b.ports.last)
}

// boxFromKeys reads a box back from a set element of an address of
// addrLen bytes (4 or 16). Anything a box cannot encode is an error.
func boxFromKeys(key, keyEnd []byte, addrLen int) (box, error) {
	if addrLen != 4 && addrLen != 16 {
		return box{}, fmt.Errorf("address length %d, want 4 or 16", addrLen)
	}
	n := addrLen + 8
	if len(key) != n || len(keyEnd) != n {
		return box{}, fmt.Errorf("element of %d and %d bytes, want %d", len(key), len(keyEnd), n)
	}
	dec := func(k []byte) (netip.Addr, uint8, uint16, error) {
		a, _ := netip.AddrFromSlice(k[:addrLen])
		p := k[addrLen:]
		if p[1] != 0 || p[2] != 0 || p[3] != 0 || p[6] != 0 || p[7] != 0 {
			return a, 0, 0, fmt.Errorf("element %x: padding not zero", k)
		}
		return a, p[0], binary.BigEndian.Uint16(p[4:6]), nil
	}
	first, proto, pfirst, err := dec(key)
	if err != nil {
		return box{}, err
	}
	last, protoEnd, plast, err := dec(keyEnd)
	if err != nil {
		return box{}, err
	}
	b := box{addrRange{first, last}, portRange{proto, pfirst, plast}}
	if proto != protoEnd || last.Less(first) || plast < pfirst {
		return box{}, fmt.Errorf("element %s: protocols %d and %d, or a range backwards", b, proto, protoEnd)
	}
	return b, nil
}

// diffBoxes says how got differs from want, both sorted.
func diffBoxes(got, want []box) string { return diffSets(got, want, box.String) }
