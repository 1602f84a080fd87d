package nft

import (
	"encoding/binary"
	"testing"
)

// Captured from the NFNLGRP_NFTABLES group of a namespace while
// 'nft add table inet mnguard' ran (x86-64).
var (
	capturedNewTable = []byte{1, 0, 0, 2, 12, 0, 1, 0, 'm', 'n', 'g', 'u', 'a', 'r', 'd', 0, 8, 0, 3, 0, 0, 0, 0, 0, 12, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 8, 0, 2, 0, 0, 0, 0, 0}
	capturedNewGen   = []byte{0, 0, 0, 2, 8, 0, 1, 0, 0, 0, 0, 2, 8, 0, 2, 0, 0, 0, 5, 22, 8, 0, 3, 0, 'n', 'f', 't', 0}
)

func attr(typ uint16, v []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestParseEvent(t *testing.T) {
	const sub = nfnlSubsysNFTables << 8
	rule := append([]byte{1, 0, 0, 5}, attr(attrTable|0x8000, []byte("mnguard\x00"))...)
	rule = append(rule, attr(2, []byte("output\x00"))...)
	other := append([]byte{1, 0, 0, 5}, attr(attrTable, []byte("filter\x00"))...)
	ipFamily := append([]byte{2, 0, 0, 5}, attr(attrTable, []byte("mnguard\x00"))...)
	for _, c := range []struct {
		name     string
		typ      uint16
		data     []byte
		want     event
		concerns bool
		err      bool
	}{
		{"new table", sub, capturedNewTable, event{family: 1, table: "mnguard"}, true, false},
		{"new gen", sub | nftMsgNewGen, capturedNewGen, event{gen: true}, false, false},
		{"rule", sub | 6, rule, event{family: 1, table: "mnguard"}, true, false},
		{"another table", sub | 6, other, event{family: 1, table: "filter"}, false, false},
		{"another family", sub | 6, ipFamily, event{family: 2, table: "mnguard"}, false, false},
		{"no table", sub | 12, []byte{1, 0, 0, 5}, event{family: 1}, true, false},
		{"other subsystem", 1 << 8, capturedNewTable, event{}, false, true},
		{"short", sub, []byte{1, 0}, event{}, false, true},
		{"attribute too long", sub | 6, []byte{1, 0, 0, 5, 200, 0, 1, 0, 'x', 0, 0, 0}, event{family: 1}, false, true},
		{"attribute too short", sub | 6, []byte{1, 0, 0, 5, 2, 0, 1, 0}, event{family: 1}, false, true},
		{"trailing bytes", sub | 6, []byte{1, 0, 0, 5, 8, 0}, event{family: 1}, false, true},
	} {
		ev, err := parseEvent(c.typ, c.data)
		if (err != nil) != c.err {
			t.Errorf("%s: err %v, want error %v", c.name, err, c.err)
		}
		if err != nil {
			continue
		}
		if ev != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, ev, c.want)
		}
		if got := ev.concerns("mnguard"); got != c.concerns {
			t.Errorf("%s: concerns = %v", c.name, got)
		}
	}
}

// FuzzParseEvent: the multicast parser never panics on what the socket
// hands it, and a table it names is a prefix-free piece of the message.
func FuzzParseEvent(f *testing.F) {
	f.Add(uint16(nfnlSubsysNFTables<<8), capturedNewTable)
	f.Add(uint16(nfnlSubsysNFTables<<8|nftMsgNewGen), capturedNewGen)
	f.Add(uint16(nfnlSubsysNFTables<<8|6), []byte{1, 0, 0, 5, 5, 0, 1, 0, 'x', 0, 0, 0})
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		ev, err := parseEvent(typ, data)
		if err != nil {
			return
		}
		if ev.gen && ev.table != "" {
			t.Fatalf("a generation message named table %q", ev.table)
		}
		if len(ev.table) > len(data) {
			t.Fatalf("table %q longer than the message", ev.table)
		}
	})
}

func TestRuleExprCount(t *testing.T) {
	handle := attr(attrRuleHandle, []byte{0, 0, 0, 0, 0, 0, 0, 42})
	elem := func(name string) []byte {
		return attr(attrListElem|0x8000, attr(1, []byte(name+"\x00")))
	}
	exprs := attr(attrRuleExprs|0x8000, append(append(elem("meta"), elem("byteorder")...), elem("cmp")...))
	msg := append([]byte{1, 0, 0, 5}, attr(1, []byte("mnguard\x00"))...)
	msg = append(append(msg, handle...), exprs...)
	h, n, err := ruleExprCount(msg)
	if err != nil || h != 42 || n != 3 {
		t.Errorf("ruleExprCount = %d, %d, %v; want handle 42, 3 expressions", h, n, err)
	}
	for name, bad := range map[string][]byte{
		"short":          {1, 0},
		"no handle":      append([]byte{1, 0, 0, 5}, exprs...),
		"handle size":    append([]byte{1, 0, 0, 5}, attr(attrRuleHandle, []byte{1, 2})...),
		"broken list":    append(append([]byte{1, 0, 0, 5}, handle...), attr(attrRuleExprs, []byte{9, 0, 1, 0})...),
		"broken message": append(append([]byte{1, 0, 0, 5}, handle...), 3, 0),
	} {
		if _, _, err := ruleExprCount(bad); err == nil {
			t.Errorf("%s: took it", name)
		}
	}
}

// FuzzRuleExprCount: the reader of the kernel's rule listing never panics.
func FuzzRuleExprCount(f *testing.F) {
	f.Add(append([]byte{1, 0, 0, 5}, attr(attrRuleHandle, []byte{0, 0, 0, 0, 0, 0, 0, 7})...))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, n, err := ruleExprCount(data)
		if err == nil && n*4 > len(data) {
			t.Fatalf("%d expressions in %d bytes", n, len(data))
		}
	})
}
