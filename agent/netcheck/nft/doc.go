// Package nft keeps the agent's own nftables table, inet mnguard, which
// drops every packet to or from an address the network policy does not
// allow, and tells when someone changed it.
//
// The table only restricts: its base chains drop what the policy does not
// allow and accept the rest, and since an accept in one table never
// overrides a drop in another, the distribution's own tables still apply
// on top. It is written through netlink (github.com/google/nftables), one
// batch per change, never by running nft.
//
// What the table lets through besides the policy, and why:
//   - loopback (iif/oif lo): the host talking to itself leaves no segment;
//   - link-local unicast and multicast (169.254.0.0/16, 224.0.0.0/24,
//     fe80::/10, ff02::/16, ff01::/16) — the addresses netpolicy.Implicit
//     names: they never cross a router, so they reach no other segment;
//   - ICMPv6 neighbour discovery, router solicitation/advertisement and MLD
//     (types 130-136 and 143) from and to any address: without them IPv6
//     stops working on the link (neighbour unreachability detection probes
//     a neighbour's global address); a rogue router advertisement is the
//     route scanner's business, and the address rules still hold;
//   - DHCPv4 (udp 68→67 out, 67→68 in) to and from any address: a terminal
//     whose lease cannot be renewed loses its address and with it the
//     collector; only root can send from port 68, and root can delete this
//     table anyway (DHCPv6 runs on link-local addresses, allowed above);
//   - the collector's addresses, every port, both directions;
//   - the DNS servers on tcp and udp port 53;
//   - the allowed networks: every port, or, for a network with ports, only
//     those destination ports out and those source ports in (the replies).
//
// Rules are by address, not by connection state: a connection to a peer
// the policy does not allow stops at once, also one made before the table
// came. Forwarded packets pass only when both source and destination are
// allowed (ports as seen from this host). ICMP to a network allowed only
// on some ports is dropped, and so are ICMP errors from routers outside
// the policy (path MTU discovery through them).
//
// Layout (testdata/lab.nft is the table of the namespace tests): base
// chains input, output and forward (hook priority filter, policy drop)
// accept loopback and jump to the regular chains to_allowed (matching the
// destination) and from_allowed (the source), which return for what the
// policy allows and end in counter drop. The base chains drop by policy,
// so a table flushed by hand cuts the terminal off until the agent repairs
// it, rather than opening the segment. Addresses live in sets:
// allowed_v4/_v6 (interval sets of the networks allowed on every port),
// collector_v4/_v6, dns_v4/_v6, and ports_v4/_v6 (address . protocol .
// port ranges of the networks allowed on some ports, nested networks cut
// into disjoint pieces), so the rule count does not grow with the policy.
//
// Drops are counted (counter drop), not logged: the kernel does not log
// from namespaces other than the first by default, and a log statement
// whose nf_log backend is missing would fail the whole batch, leaving the
// segment open.
//
// The table cannot stop what another table does after it: a chain of
// another table at a later priority may rewrite a packet's destination
// after this table let it through, and packet sockets (CAP_NET_RAW) bypass
// netfilter altogether. Both need root, as deleting this table does; this
// package makes changes to its own table evident and repairs them.
//
// Check compares what the kernel lists with what Apply writes: table
// flags (dormant), chains, every expression of every rule (and how many
// there are by the kernel's own count, since google/nftables silently
// skips expressions it cannot decode), sets and their elements.
package nft
