//go:build linux

package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Enforcer keeps the table inet mnguard (or Options.Table) in the network
// namespace it was opened in. It satisfies netcheck.Enforcer. Its methods
// may be called concurrently; Apply and Remove are serialized.
type Enforcer struct {
	log   *slog.Logger
	netns int
	table string
	mu    sync.Mutex // serializes Apply and Remove
}

// New returns an Enforcer; it opens nothing until used.
func New(o Options) *Enforcer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	return &Enforcer{log: o.Logger, netns: o.NetNS, table: o.Table}
}

// Mechanism names the table.
func (e *Enforcer) Mechanism() string { return "nftables table inet " + e.table }

// sockBuf is the socket buffer size for a batch: the kernel acknowledges
// every message of a batch, and a policy of many networks with ports is
// thousands of rules.
const sockBuf = 8 << 20

// elemChunk is how many set elements go in one message: a box element is
// about 80 bytes on the wire, and one message's element list must stay
// under 64 KiB.
const elemChunk = 256

// conn opens a netlink connection of its own for one operation.
func (e *Enforcer) conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(e.netns), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		// Acknowledgements without a copy of the request; larger buffers
		// (forced: the agent runs as root, rmem_max is often 208 KiB).
		if err := nc.SetOption(netlink.CapAcknowledge, true); err != nil {
			return fmt.Errorf("netlink ack option: %w", err)
		}
		rc, err := nc.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf))
		}); err != nil {
			return err
		}
		if serr != nil {
			// Without CAP_NET_ADMIN: the ordinary limits, capped by rmem_max.
			return errors.Join(nc.SetReadBuffer(sockBuf), nc.SetWriteBuffer(sockBuf))
		}
		return nil
	}))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// Apply replaces the table with the one for p in one netlink batch: the
// old table (if any) is deleted and the new one created in the same
// transaction, so no packet ever sees no table, or a mix of old and new.
func (e *Enforcer) Apply(ctx context.Context, p *netpolicy.Policy) error {
	rs, err := build(e.table, p)
	if err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	start := time.Now()
	c, err := e.conn()
	if err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	// Adding an existing table is no error; deleting it then takes all it
	// holds; the batch then builds it anew.
	c.AddTable(rs.table)
	c.DelTable(rs.table)
	c.AddTable(rs.table)
	for _, s := range rs.sets {
		if err := c.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("nftables apply: set %s: %w", s.set.Name, err)
		}
		// A netlink attribute holds at most 64 KiB: elements go in chunks.
		for chunk := range slices.Chunk(s.elements(), elemChunk) {
			if err := c.SetAddElements(s.set, chunk); err != nil {
				return fmt.Errorf("nftables apply: set %s: %w", s.set.Name, err)
			}
		}
	}
	nrules := 0
	for _, ch := range rs.chains {
		c.AddChain(ch.chain)
	}
	for _, ch := range rs.chains {
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: rs.table, Chain: ch.chain, Exprs: r})
			nrules++
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables apply table inet %s: %w", e.table, err)
	}
	e.log.Debug("nftables table applied", "table", e.table, "policy", p.Version,
		"rules", nrules, "took", time.Since(start))
	return nil
}

// Remove deletes the table; no error when there is none.
func (e *Enforcer) Remove(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nftables remove: %w", err)
	}
	c, err := e.conn()
	if err != nil {
		return fmt.Errorf("nftables remove: %w", err)
	}
	c.DelTable(&nftables.Table{Name: e.table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables remove table inet %s: %w", e.table, err)
	}
	return nil
}

// Check lists the table and compares it with what Apply writes for p:
// table flags, chains (hook, priority, type, policy), every rule's
// expressions, sets and their elements. detail names what differs. A
// table deleted or changed while it is read is not in place ("table inet
// mnguard missing", or what differs), never an error: errors are for
// failures to ask.
func (e *Enforcer) Check(ctx context.Context, p *netpolicy.Policy) (inPlace bool, detail string, err error) {
	want, err := build(e.table, p)
	if err != nil {
		return false, "", fmt.Errorf("nftables check: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, "", fmt.Errorf("nftables check: %w", err)
	}
	c, err := e.conn()
	if err != nil {
		return false, "", fmt.Errorf("nftables check: %w", err)
	}
	for try := 1; ; try++ {
		diffs, err := e.diff(c, want)
		if err == nil && len(diffs) == 0 {
			return true, "", nil
		}
		if err != nil && !notFound(err) {
			return false, "", fmt.Errorf("nftables check table inet %s: %w", e.table, err)
		}
		// Something listed went away while it was read (ENOENT on a
		// chain's rules, a set, its elements), or parts were missing:
		// the table may have been deleted under the check. Gone now:
		// that is the answer (and the truest detail).
		_, terr := c.ListTableOfFamily(e.table, nftables.TableFamilyINet)
		if errors.Is(terr, unix.ENOENT) {
			return false, "table inet " + e.table + " missing", nil
		}
		if terr != nil {
			return false, "", fmt.Errorf("nftables check table inet %s: %w", e.table, terr)
		}
		if err == nil {
			return false, strings.Join(diffs, "; "), nil
		}
		if err := ctx.Err(); err != nil {
			return false, "", fmt.Errorf("nftables check: %w", err)
		}
		if try == checkTries {
			// There, but never the same for a whole read: not the
			// table Apply wrote, whatever it is.
			return false, fmt.Sprintf("table inet %s changed while it was read, %d times in a row (%v)", e.table, try, err), nil
		}
	}
}

// checkTries bounds the reads of a table that keeps changing under Check.
const checkTries = 3

// notFound says whether err is the kernel's ENOENT. google/nftables
// v0.3.0 flattens the errors of its dumps (rules, sets, set elements)
// with %v ("receiveAckAware: netlink receive: no such file or
// directory"): errors.Is cannot see the errno there, its text can.
func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.HasSuffix(err.Error(), unix.ENOENT.Error())
}

// diff lists how the kernel's table differs from want.
func (e *Enforcer) diff(c *nftables.Conn, want *ruleset) ([]string, error) {
	name := "table inet " + e.table
	t, err := c.ListTableOfFamily(e.table, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return []string{name + " missing"}, nil
	}
	if err != nil {
		return nil, err
	}
	var diffs []string
	// google/nftables v0.3.0 decodes NFTA_TABLE_FLAGS (big endian on the
	// wire) in the host's byte order; read the wire bytes back.
	flags := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, t.Flags))
	if flags&unix.NFT_TABLE_F_DORMANT != 0 {
		diffs = append(diffs, name+" dormant (its chains see no packet)")
	}
	if other := flags &^ unix.NFT_TABLE_F_DORMANT; other != 0 {
		diffs = append(diffs, fmt.Sprintf("%s flags %#x", name, other))
	}

	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range all {
		if ch.Table != nil && ch.Table.Name == e.table {
			chains[ch.Name] = ch
		}
	}
	counts, err := e.exprCounts()
	if err != nil {
		return nil, err
	}
	for _, w := range want.chains {
		got, ok := chains[w.chain.Name]
		if !ok {
			diffs = append(diffs, "chain "+w.chain.Name+" missing")
			continue
		}
		delete(chains, w.chain.Name)
		if d := chainDiff(got, w.chain); d != "" {
			diffs = append(diffs, "chain "+w.chain.Name+" "+d)
		}
		rules, err := c.GetRules(t, got)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", w.chain.Name, err)
		}
		if d := rulesDiff(rules, w.rules); d != "" {
			diffs = append(diffs, "chain "+w.chain.Name+" "+d)
		}
		for i, r := range rules {
			if n, ok := counts[r.Handle]; ok && n != len(r.Exprs) {
				diffs = append(diffs, fmt.Sprintf("chain %s rule %d holds %d expressions, %d of a kind this agent cannot read",
					w.chain.Name, i+1, n, n-len(r.Exprs)))
			}
		}
	}
	for _, n := range sortedKeys(chains) {
		diffs = append(diffs, "unexpected chain "+n)
	}

	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	byName := map[string]*nftables.Set{}
	for _, s := range sets {
		byName[s.Name] = s
	}
	for _, w := range want.sets {
		got, ok := byName[w.set.Name]
		if !ok {
			diffs = append(diffs, "set "+w.set.Name+" missing")
			continue
		}
		delete(byName, w.set.Name)
		if got.KeyType.Name != w.set.KeyType.Name || got.Interval != w.set.Interval ||
			got.Concatenation != w.set.Concatenation ||
			got.Constant || got.IsMap || got.HasTimeout || got.Dynamic {
			diffs = append(diffs, "set "+w.set.Name+" changed: type or flags")
			continue
		}
		elems, err := c.GetSetElements(got)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", w.set.Name, err)
		}
		if d := elemsDiff(w, elems); d != "" {
			diffs = append(diffs, "set "+w.set.Name+" changed: "+d)
		}
	}
	for _, n := range sortedKeys(byName) {
		diffs = append(diffs, "unexpected set "+n)
	}
	return diffs, nil
}

// exprCounts lists the table's rules itself and counts each one's
// expressions by handle: google/nftables skips expressions it does not
// know (byteorder, rt, socket, ...), and one of them between a load and
// its comparison would change a rule that then still looks as written.
func (e *Enforcer) exprCounts() (map[uint64]int, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: e.netns})
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer nl.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(e.table + "\x00")}})
	if err != nil {
		return nil, err
	}
	msgs, err := nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	counts := make(map[uint64]int, len(msgs))
	for _, m := range msgs {
		h, n, err := ruleExprCount(m.Data)
		if err != nil {
			return nil, err
		}
		counts[h] = n
	}
	return counts, nil
}

func chainDiff(got, want *nftables.Chain) string {
	var d []string
	if got.Type != want.Type {
		d = append(d, fmt.Sprintf("type %q", got.Type))
	}
	if !equalPtr(got.Hooknum, want.Hooknum) {
		d = append(d, "hook")
	}
	if !equalPtr(got.Priority, want.Priority) {
		d = append(d, "priority")
	}
	if !equalPtr(got.Policy, want.Policy) {
		d = append(d, "policy")
	}
	if len(d) == 0 {
		return ""
	}
	return "changed: " + strings.Join(d, ", ")
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// rulesDiff compares a chain's rules with the expressions Apply writes.
func rulesDiff(got []*nftables.Rule, want [][]expr.Any) string {
	if len(got) == 0 && len(want) > 0 {
		return fmt.Sprintf("flushed: 0 of %d rules", len(want))
	}
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(normalize(got[i].Exprs), normalize(want[i])) {
			return fmt.Sprintf("rule %d of %d changed (handle %d)", i+1, len(want), got[i].Handle)
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("has %d rules, want %d", len(got), len(want))
	}
	return ""
}

// normalize drops what differs between a rule as written and as listed
// without changing what it does: counter values, the batch-local set ID.
func normalize(es []expr.Any) []expr.Any {
	out := make([]expr.Any, len(es))
	for i, e := range es {
		switch v := e.(type) {
		case *expr.Counter:
			out[i] = &expr.Counter{}
		case *expr.Lookup:
			l := *v
			l.SetID = 0
			out[i] = &l
		default:
			out[i] = e
		}
	}
	return out
}

// elemsDiff compares a set's elements with what Apply writes.
func elemsDiff(w *setSpec, got []nftables.SetElement) string {
	for _, g := range got {
		if len(g.Val) > 0 || g.VerdictData != nil || g.Timeout != 0 || (len(g.KeyEnd) > 0) != w.set.Concatenation {
			return "an element carries data"
		}
	}
	if w.set.Concatenation {
		addrLen := 4
		if w.set.KeyType.Bytes > 12 {
			addrLen = 16
		}
		boxes := make([]box, 0, len(got))
		for _, g := range got {
			b, err := boxFromKeys(g.Key, g.KeyEnd, addrLen)
			if err != nil {
				return err.Error()
			}
			boxes = append(boxes, b)
		}
		slices.SortFunc(boxes, compareBoxes)
		return diffBoxes(boxes, w.boxes)
	}
	if w.set.Interval {
		es := make([]elem, len(got))
		for i, g := range got {
			es[i] = elem{key: g.Key, end: g.IntervalEnd}
		}
		ranges, err := rangesFromElems(es, int(w.set.KeyType.Bytes))
		if err != nil {
			return err.Error()
		}
		return diffRanges(mergeRanges(ranges), w.ranges)
	}
	addrs := make([]addrRange, 0, len(got))
	for _, g := range got {
		a, ok := netip.AddrFromSlice(g.Key)
		if !ok || len(g.Key) != int(w.set.KeyType.Bytes) || g.IntervalEnd {
			return fmt.Sprintf("element of %d bytes", len(g.Key))
		}
		addrs = append(addrs, addrRange{a, a})
	}
	wantAddrs := make([]addrRange, len(w.addrs))
	for i, a := range w.addrs {
		wantAddrs[i] = addrRange{a, a}
	}
	sortRanges(addrs)
	return diffRanges(addrs, wantAddrs)
}

func sortRanges(rs []addrRange) {
	slices.SortFunc(rs, func(a, b addrRange) int { return a.first.Compare(b.first) })
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Watch calls changed once it listens (a change before that was not
// announced: the caller should check), then once after each nftables
// transaction in the namespace that touched this table (or that it cannot
// attribute), until ctx ends. It listens on the nftables multicast group itself rather than
// through nftables.Monitor, which cannot say which table an element event
// belongs to and decodes every rule's expressions.
func (e *Enforcer) Watch(ctx context.Context, changed func()) error {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: e.netns})
	if err != nil {
		return fmt.Errorf("nftables watch: %w", err)
	}
	defer nl.Close()
	if err := nl.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		return fmt.Errorf("nftables watch: join NFNLGRP_NFTABLES: %w", err)
	}
	_ = nl.SetReadBuffer(1 << 20) // best effort: an overrun is handled below
	stop := context.AfterFunc(ctx, func() { _ = nl.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	// Joined: from here on no change is missed. One made before (between
	// the caller's last check and now) was not announced: the caller
	// checks once now.
	changed()
	pending := false
	for {
		msgs, err := nl.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				// Events were lost: anything may have changed.
				e.log.Warn("nftables watch: events lost (receive buffer overrun)")
				pending = false
				changed()
				continue
			}
			return fmt.Errorf("nftables watch: %w", err)
		}
		for _, m := range msgs {
			ev, err := parseEvent(uint16(m.Header.Type), m.Data)
			switch {
			case err != nil:
				pending = true
			case ev.gen:
				if pending {
					pending = false
					changed()
				}
			case ev.concerns(e.table):
				pending = true
			}
		}
	}
}
