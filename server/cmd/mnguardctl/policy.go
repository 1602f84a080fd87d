package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
)

// maxPolicyVersion is the longest version the collector takes in
// expected_version.
const maxPolicyVersion = 64

func policyShow(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	resp, _, err := request(ctx, inv, "get network policy", mnguardv1.AdminServiceClient.GetNetworkPolicy, &mnguardv1.GetNetworkPolicyRequest{})
	if err != nil {
		return err
	}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	fields := inv.policyFields(resp.GetPolicy(), resp.GetPolicyVersion())
	if resp.GetPolicy() != nil {
		fields = append(fields, inv.timeField("updated_at", "Updated", resp.GetUpdatedAt()), kv("updated_by", "Updated by", resp.GetUpdatedBy()))
	}
	return writeFields(w, inv.format, fields)
}

// policyRequest builds the policy to set from the flags and the policy in
// force (cur, nil when none is set): a list given replaces the current
// one, a list not given is kept.
func policyRequest(inv *invocation, cur *mnguardv1.NetworkPolicy) (*mnguardv1.NetworkPolicy, error) {
	o := inv.opts
	np := &mnguardv1.NetworkPolicy{Enforce: cur.GetEnforce()}
	switch {
	case o.allowNetwork.set:
		for _, v := range o.allowNetwork.v {
			n, err := netpolicy.ParseNetwork(v)
			if err != nil {
				return nil, usagef("policy set: --allow-network: %v", err)
			}
			an := &mnguardv1.AllowedNetwork{Cidr: n.Prefix.String()}
			for _, r := range n.Ports {
				an.Ports = append(an.Ports, &mnguardv1.PortRange{Protocol: r.Proto, First: uint32(r.First), Last: uint32(r.Last)})
			}
			np.Networks = append(np.Networks, an)
		}
	case !o.noNetworks:
		for _, n := range cur.GetNetworks() {
			np.Networks = append(np.Networks, proto.Clone(n).(*mnguardv1.AllowedNetwork))
		}
	}
	switch {
	case o.allowDNS.set:
		for _, v := range o.allowDNS.v {
			a, err := netpolicy.ParseDNS(v)
			if err != nil {
				return nil, usagef("policy set: --allow-dns: %v", err)
			}
			np.DnsServers = append(np.DnsServers, a.String())
		}
	case !o.noDNS:
		np.DnsServers = append(np.DnsServers, cur.GetDnsServers()...)
	}
	switch {
	case o.enforceNetwork:
		np.Enforce = true
	case o.noEnforceNetwork:
		np.Enforce = false
	}
	return np, nil
}

// checkPolicyFlags refuses contradictory or empty policy set command lines
// before anything is asked of the server.
func checkPolicyFlags(inv *invocation) error {
	o := inv.opts
	switch {
	case o.enforceNetwork && o.noEnforceNetwork:
		return usagef("policy set: --enforce-network and --no-enforce-network: give one")
	case o.noNetworks && o.allowNetwork.set:
		return usagef("policy set: --no-networks and --allow-network: give one")
	case o.noDNS && o.allowDNS.set:
		return usagef("policy set: --no-dns and --allow-dns: give one")
	case !o.allowNetwork.set && !o.allowDNS.set && !o.noNetworks && !o.noDNS && !o.enforceNetwork && !o.noEnforceNetwork:
		return usagef("policy set: nothing to change: give --allow-network, --allow-dns, --no-networks, --no-dns, --enforce-network or --no-enforce-network")
	}
	if o.expectVersion.set {
		if o.expectVersion.v == "" {
			return usagef("policy set: --expect-version is empty")
		}
		if err := checkText(inv, "expect-version", o.expectVersion.v, maxPolicyVersion); err != nil {
			return err
		}
	}
	// Parsed here too, so that a typo fails before the server is asked.
	_, err := policyRequest(inv, nil)
	return err
}

func policySet(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	if err := checkPolicyFlags(inv); err != nil {
		return err
	}
	c, err := inv.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	// Read, change, and set only if nobody changed it meanwhile.
	cur, err := call(ctx, c, "get network policy", c.client.GetNetworkPolicy, &mnguardv1.GetNetworkPolicyRequest{})
	if err != nil {
		return err
	}
	np, err := policyRequest(inv, cur.GetPolicy())
	if err != nil {
		return err
	}
	expect := cur.GetPolicy().GetVersion()
	if inv.opts.expectVersion.set {
		expect = inv.opts.expectVersion.v
	}
	resp, err := call(ctx, c, "set network policy", c.client.SetNetworkPolicy, &mnguardv1.SetNetworkPolicyRequest{Policy: np, ExpectedVersion: expect})
	if err != nil {
		return err
	}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	if inv.format == formatTable {
		before, after := cur.GetPolicy().GetVersion(), resp.GetPolicy().GetVersion()
		switch {
		case before == after:
			fmt.Fprintf(w, "network policy %s unchanged\n", sanitize(after))
		case before == "":
			fmt.Fprintf(w, "network policy %s set (none before); pushed to connected agents\n", sanitize(after))
		default:
			fmt.Fprintf(w, "network policy %s set (was %s); pushed to connected agents\n", sanitize(after), sanitize(before))
		}
	}
	return writeFields(w, inv.format, inv.policyFields(resp.GetPolicy(), resp.GetPolicyVersion()))
}

// policyFields is the key/value view of a network policy.
func (inv *invocation) policyFields(p *mnguardv1.NetworkPolicy, policyVersion string) []field {
	if p == nil {
		return []field{
			{key: "version", label: "Network policy", value: "none set: agents take inventory and report wireless and USB network adapters only"},
			kv("policy_version", "Pushed policy", policyVersion),
		}
	}
	enforce := field{key: "enforce", label: "Enforcement", raw: strconv.FormatBool(p.GetEnforce()),
		value: "off: agents report what breaks isolation and block nothing"}
	if p.GetEnforce() {
		enforce.value = "on: agents block traffic outside the policy"
	}
	nets := field{key: "networks", label: "Allowed networks", raw: strconv.Itoa(len(p.GetNetworks())), value: "none"}
	if n := len(p.GetNetworks()); n > 0 {
		nets.value = plural(uint64(n), "network", "networks")
	}
	for i, n := range p.GetNetworks() {
		ports := "every port"
		if len(n.GetPorts()) > 0 {
			ports = portsText(n.GetPorts())
		}
		nets.sub = append(nets.sub, field{key: fmt.Sprintf("networks[%d]", i), label: n.GetCidr(), value: ports, raw: networkText(n)})
	}
	return []field{
		kv("version", "Network policy", p.GetVersion()),
		enforce,
		nets,
		{key: "dns_servers", label: "DNS servers", value: orNone(p.GetDnsServers(), ", "), raw: strings.Join(p.GetDnsServers(), " ")},
		{key: "collector_addrs", label: "Collector (always allowed)", value: orNone(p.GetCollectorAddrs(), ", "), raw: strings.Join(p.GetCollectorAddrs(), " ")},
		kv("policy_version", "Pushed policy", policyVersion),
	}
}

// portsText is "tcp/443, udp/53, tcp/8000-8100".
func portsText(rs []*mnguardv1.PortRange) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.GetProtocol() + "/" + strconv.FormatUint(uint64(r.GetFirst()), 10)
		if r.GetLast() != 0 && r.GetLast() != r.GetFirst() {
			out[i] += "-" + strconv.FormatUint(uint64(r.GetLast()), 10)
		}
	}
	return strings.Join(out, ", ")
}

// networkText is the form --allow-network takes: "CIDR" or
// "CIDR@tcp/443,udp/53".
func networkText(n *mnguardv1.AllowedNetwork) string {
	if len(n.GetPorts()) == 0 {
		return n.GetCidr()
	}
	return n.GetCidr() + "@" + strings.ReplaceAll(portsText(n.GetPorts()), ", ", ",")
}

func orNone(s []string, sep string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, sep)
}
