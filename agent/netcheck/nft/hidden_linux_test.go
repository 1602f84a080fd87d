//go:build linux

package nft

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// TestDriftHiddenExpression: a rule changed by an expression google/nftables
// does not decode (byteorder) lists back as written, expression for
// expression, yet lets through what the policy drops. Check still sees it.
func TestDriftHiddenExpression(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	e := New(Options{NetNS: l.term.fd})
	// The policy also allows 2.113.0.0/16: 203.0.113.2 with its bytes
	// swapped is 2.113.0.203.
	p := labPolicy(t)
	n, _ := netpolicy.ParseNetwork("2.113.0.0/16")
	p.Networks = append(p.Networks, n)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := l.term.reach("tcp", "203.0.113.2:8080", time.Second); err == nil {
		t.Fatal("the disallowed peer is reachable before the tampering")
	}

	c, err := e.conn()
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: e.table, Family: nftables.TableFamilyINet}
	for _, chain := range []string{chainTo, chainFrom} {
		ch := &nftables.Chain{Name: chain, Table: table}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(rules, func(r *nftables.Rule) bool {
			return slices.ContainsFunc(r.Exprs, func(x expr.Any) bool {
				l, ok := x.(*expr.Lookup)
				return ok && l.SetName == setAllowed4
			})
		})
		if i < 0 {
			t.Fatalf("no allowed_v4 rule in %s", chain)
		}
		r := rules[i]
		// After the address load: swap the address's bytes in register 1.
		load := slices.IndexFunc(r.Exprs, func(x expr.Any) bool { _, ok := x.(*expr.Payload); return ok })
		tampered := slices.Insert(slices.Clone(r.Exprs), load+1, expr.Any(&expr.Byteorder{
			SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4,
		}))
		c.ReplaceRule(&nftables.Rule{Table: table, Chain: ch, Handle: r.Handle, Exprs: tampered})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	if err := l.term.reach("tcp", "203.0.113.2:8080", 3*time.Second); err != nil {
		t.Fatalf("the tampered rules do not let the disallowed peer through (%v): the test proves nothing", err)
	}
	ok, detail, err := e.Check(ctx, p)
	if err != nil || ok || !strings.Contains(detail, "1 of a kind this agent cannot read") {
		t.Errorf("Check after a hidden change = %v, %q, %v", ok, detail, err)
	}
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Errorf("after repair: Check = %v, %q, %v", ok, detail, err)
	}
	if err := l.term.reach("tcp", "203.0.113.2:8080", time.Second); err == nil {
		t.Error("the disallowed peer is reachable after the repair")
	}
}
