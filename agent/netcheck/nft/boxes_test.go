package nft

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
)

func nets(t testing.TB, spec map[string][]portRange) []portedNet {
	t.Helper()
	var out []portedNet
	for p, ports := range spec {
		out = append(out, portedNet{prefix: netip.MustParsePrefix(p), ports: ports})
	}
	return out
}

func TestPortBoxes(t *testing.T) {
	tcp := func(a, b uint16) portRange { return portRange{protoTCP, a, b} }
	udp := func(a, b uint16) portRange { return portRange{protoUDP, a, b} }
	got := portBoxes(nets(t, map[string][]portRange{
		"10.0.0.0/8":       {tcp(443, 443), udp(53, 53)},
		"10.1.0.0/16":      {tcp(80, 80), tcp(444, 500)}, // nested, touching 443
		"192.0.2.0/25":     {tcp(22, 22)},
		"192.0.2.128/25":   {tcp(22, 22)}, // joins the one before
		"255.255.255.0/24": {udp(1, 65535)},
	}))
	var s []string
	for _, b := range got {
		s = append(s, b.String())
	}
	want := []string{
		"10.0.0.0/16 . tcp . 443",
		"10.1.0.0/16 . tcp . 80",
		"10.1.0.0/16 . tcp . 443-500",
		"10.2.0.0-10.255.255.255 . tcp . 443",
		"192.0.2.0/24 . tcp . 22",
		"10.0.0.0/8 . udp . 53",
		"255.255.255.0/24 . udp . 1-65535",
	}
	if !slices.Equal(s, want) {
		t.Errorf("portBoxes:\n%q\nwant\n%q", s, want)
	}
	if portBoxes(nil) != nil {
		t.Error("boxes of nothing")
	}
}

func TestBoxKeysRoundTrip(t *testing.T) {
	for _, b := range []box{
		{prefixRange(netip.MustParsePrefix("203.0.113.128/25")), portRange{protoTCP, 443, 443}},
		{prefixRange(netip.MustParsePrefix("2001:db8:a::/64")), portRange{protoUDP, 8000, 8100}},
	} {
		k, ke := boxKeys(b)
		n := 4
		if b.addrs.first.Is6() {
			n = 16
		}
		got, err := boxFromKeys(k, ke, n)
		if err != nil || got != b {
			t.Errorf("%s: read back as %s, %v", b, got, err)
		}
	}
	good, goodEnd := boxKeys(box{prefixRange(netip.MustParsePrefix("10.0.0.0/8")), portRange{protoTCP, 1, 2}})
	bad := slices.Clone(good)
	bad[5] = 1 // padding after the protocol
	otherProto := slices.Clone(goodEnd)
	otherProto[4] = protoUDP
	backwards := slices.Clone(goodEnd)
	binary.BigEndian.PutUint16(backwards[8:], 0)
	for name, c := range map[string][3]any{
		"addr length": {good, goodEnd, 6},
		"key length":  {good[:11], goodEnd, 4},
		"padding":     {bad, goodEnd, 4},
		"protocols":   {good, otherProto, 4},
		"backwards":   {good, backwards, 4},
		"v6 as v4":    {append(good, make([]byte, 12)...), append(goodEnd, make([]byte, 12)...), 4},
	} {
		if b, err := boxFromKeys(c[0].([]byte), c[1].([]byte), c[2].(int)); err == nil {
			t.Errorf("%s: took it as %s", name, b)
		}
	}
}

// FuzzBoxFromKeys: the decoder of the kernel's listing of ports_v4 and
// ports_v6 never panics, and what it accepts encodes back to the same
// bytes.
func FuzzBoxFromKeys(f *testing.F) {
	k, ke := boxKeys(box{prefixRange(netip.MustParsePrefix("203.0.113.128/25")), portRange{protoTCP, 443, 443}})
	f.Add(k, ke, 4)
	k, ke = boxKeys(box{prefixRange(netip.MustParsePrefix("2001:db8::/32")), portRange{protoUDP, 1, 9}})
	f.Add(k, ke, 16)
	f.Fuzz(func(t *testing.T, key, keyEnd []byte, addrLen int) {
		b, err := boxFromKeys(key, keyEnd, addrLen)
		if err != nil {
			return
		}
		k, ke := boxKeys(b)
		if string(k) != string(key) || string(ke) != string(keyEnd) {
			t.Fatalf("%s: %x %x encoded back as %x %x", b, key, keyEnd, k, ke)
		}
	})
}

// FuzzPortBoxes checks portBoxes against the plain reading of the policy:
// for random networks (nested or not) and random probes, a probe is in
// exactly one box when some network holds its address and port, and in
// none otherwise.
func FuzzPortBoxes(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 6, 1, 187, 0, 0, 10, 1, 0, 0, 16, 6, 0, 80, 0, 0}, []byte{10, 1, 2, 3, 6, 0, 80, 10, 2, 0, 0, 6, 1, 187})
	f.Fuzz(func(t *testing.T, netBytes, probeBytes []byte) {
		// A network: 4 address bytes, prefix length, protocol bit, first
		// port, span.
		var ns []portedNet
		for len(netBytes) >= 10 && len(ns) < 16 {
			b := netBytes[:10]
			netBytes = netBytes[10:]
			pfx, err := netip.AddrFrom4([4]byte(b[:4])).Prefix(int(b[4]%32) + 1)
			if err != nil {
				continue
			}
			proto := uint8(protoTCP)
			if b[5]&1 == 1 {
				proto = protoUDP
			}
			first := max(binary.BigEndian.Uint16(b[6:8]), 1)
			last := first + min(binary.BigEndian.Uint16(b[8:10]), 65535-first)
			ns = append(ns, portedNet{prefix: pfx, ports: []portRange{{proto, first, last}}})
		}
		boxes := portBoxes(ns)
		for i := 1; i < len(boxes); i++ {
			if compareBoxes(boxes[i-1], boxes[i]) >= 0 {
				t.Fatalf("boxes not sorted: %v", boxes)
			}
		}
		for len(probeBytes) >= 7 {
			b := probeBytes[:7]
			probeBytes = probeBytes[7:]
			a := netip.AddrFrom4([4]byte(b[:4]))
			proto := uint8(protoTCP)
			if b[4]&1 == 1 {
				proto = protoUDP
			}
			port := binary.BigEndian.Uint16(b[5:7])
			want := false
			for _, n := range ns {
				for _, r := range n.ports {
					if n.prefix.Contains(a) && r.proto == proto && r.first <= port && port <= r.last {
						want = true
					}
				}
			}
			hits := 0
			for _, bx := range boxes {
				if bx.ports.proto == proto && !a.Less(bx.addrs.first) && !bx.addrs.last.Less(a) &&
					bx.ports.first <= port && port <= bx.ports.last {
					hits++
				}
			}
			if hits > 1 || (hits == 1) != want {
				t.Fatalf("%s %d/%d: in %d boxes, allowed %v; networks %v, boxes %v", a, proto, port, hits, want, ns, boxes)
			}
		}
	})
}
