package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/state"
)

func TestNetworkLines(t *testing.T) {
	now := time.Now()
	finding := func(i int) state.NetworkFinding {
		return state.NetworkFinding{Kind: "socket", Detail: "tcp 198.51.100.2:4000 → 203.0.113.1:80 established", Process: "curl", PID: uint32(100 + i), User: "alice"}
	}
	tests := []struct {
		name   string
		n      *state.NetworkStatus
		ok     bool
		want   []string
		absent []string
	}{
		{name: "not checked", n: nil, ok: true, want: []string{"Network:     not checked yet\n"}},
		{name: "no policy", n: &state.NetworkStatus{LastScan: now}, ok: true,
			want: []string{"Network:     no network policy from the collector: inventory only", "Findings:    none: isolated\n"}},
		{name: "report only", n: &state.NetworkStatus{PolicyVersion: "n-1a2b3c4d", Findings: 1, FirstFindings: []state.NetworkFinding{finding(0)}}, ok: true,
			want: []string{"policy n-1a2b3c4d, checked and reported, not enforced", "Findings:    1 break isolation", "  socket: tcp 198.51.100.2:4000 → 203.0.113.1:80 established (curl pid 100 user alice)\n"}},
		{name: "enforced", n: &state.NetworkStatus{PolicyVersion: "n-1", EnforceRequested: true, EnforceInPlace: true, Mechanism: "nftables table inet mnguard", Repairs: 2}, ok: true,
			want: []string{"policy n-1, enforced: rules in place (nftables table inet mnguard; drift repaired 2 times)"}},
		{name: "enforcement failing", n: &state.NetworkStatus{PolicyVersion: "n-1", EnforceRequested: true, EnforceDetail: "nftables: operation not permitted"}, ok: false,
			want: []string{"policy n-1, enforcement NOT in place: nftables: operation not permitted"}},
		{name: "enforcement failing without a reason", n: &state.NetworkStatus{PolicyVersion: "n-1", EnforceRequested: true}, ok: false,
			want: []string{"enforcement NOT in place: no reason given"}},
		{name: "policy refused", n: &state.NetworkStatus{PolicyVersion: "n-1", PolicyError: "networks: \"10.0.0.1/8\" has host bits set"}, ok: false,
			want: []string{"Net policy:  REFUSED the collector's last network policy, the one before stays in force: networks: \"10.0.0.1/8\" has host bits set", "policy n-1, checked"}},
		{name: "scan errors", n: &state.NetworkStatus{ScanErrors: []string{"sockets: permission denied", "dns: x"}}, ok: true,
			want: []string{"Net scan:    INCOMPLETE, isolation not proven: sockets: permission denied; dns: x"}},
		{name: "more than shown", n: &state.NetworkStatus{PolicyVersion: "n-1", Findings: 7, FirstFindings: []state.NetworkFinding{finding(0), finding(1)}}, ok: true,
			want: []string{"Findings:    7 break isolation", "pid 101", "  and 5 more\n"}},
		{name: "hostile process name", n: &state.NetworkStatus{PolicyVersion: "n-1", Findings: 1, FirstFindings: []state.NetworkFinding{{Kind: "socket", Detail: "d", Process: "x\nFindings:    none\x1b[2J", PID: 9}}}, ok: true,
			want: []string{"(x?Findings:    none?[2J pid 9)"}, absent: []string{"\x1b", "\nFindings:    none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if got := networkLines(&out, tt.n, now); got != tt.ok {
				t.Errorf("ok = %v, want %v", got, tt.ok)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("output holds %q:\n%s", a, out.String())
				}
			}
		})
	}
}
