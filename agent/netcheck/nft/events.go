package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
)

// Netlink numbers from linux/netfilter/nfnetlink.h and nf_tables.h; this
// file builds everywhere, so that its parser is fuzzed on every OS.
const (
	nfnlSubsysNFTables = 10
	nftMsgNewGen       = 15
	nfprotoINet        = 1
	nlaTypeMask        = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
	// Attribute 1 names the table in every nftables object message:
	// NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
	// NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE.
	attrTable = 1
)

// event is one message of the nftables multicast group.
type event struct {
	// gen: NFT_MSG_NEWGEN, which ends every committed transaction.
	gen    bool
	family uint8
	table  string // "" when the message names no table
}

// parseEvent reads the family and table of one message of the
// NFNLGRP_NFTABLES group from its netlink type and payload (struct
// nfgenmsg, then attributes). Messages of other subsystems are an error.
func parseEvent(typ uint16, data []byte) (event, error) {
	if typ>>8 != nfnlSubsysNFTables {
		return event{}, fmt.Errorf("nftables event: subsystem %d, want %d", typ>>8, nfnlSubsysNFTables)
	}
	if len(data) < 4 {
		return event{}, fmt.Errorf("nftables event: %d bytes, shorter than its 4-byte header", len(data))
	}
	ev := event{gen: typ&0xff == nftMsgNewGen, family: data[0]}
	err := walkAttrs(data[4:], func(t uint16, v []byte) {
		if t == attrTable && !ev.gen {
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			ev.table = string(v)
		}
	})
	if err != nil {
		return ev, fmt.Errorf("nftables event: %w", err)
	}
	return ev, nil
}

// walkAttrs calls fn with the type and value of each netlink attribute
// in b.
func walkAttrs(b []byte, fn func(typ uint16, v []byte)) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%d trailing bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if n < 4 || n > len(b) {
			return fmt.Errorf("attribute %d of length %d in %d bytes", t, n, len(b))
		}
		fn(t, b[4:n])
		b = b[min((n+3)&^3, len(b)):]
	}
	return nil
}

// Attributes of an NFT_MSG_NEWRULE message (linux/netfilter/nf_tables.h).
const (
	attrRuleHandle = 3 // NFTA_RULE_HANDLE, big endian u64
	attrRuleExprs  = 4 // NFTA_RULE_EXPRESSIONS, a list of NFTA_LIST_ELEM
	attrListElem   = 1 // NFTA_LIST_ELEM
)

// ruleExprCount reads a rule as the kernel lists it (struct nfgenmsg,
// then attributes) for its handle and the number of expressions it holds,
// read or not: a parser that skips an expression kind it does not know
// cannot hide one from this count.
func ruleExprCount(data []byte) (handle uint64, n int, err error) {
	if len(data) < 4 {
		return 0, 0, fmt.Errorf("nftables rule: %d bytes, shorter than its 4-byte header", len(data))
	}
	var inner error
	haveHandle := false
	err = walkAttrs(data[4:], func(t uint16, v []byte) {
		switch t {
		case attrRuleHandle:
			if len(v) != 8 {
				inner = fmt.Errorf("handle of %d bytes", len(v))
				return
			}
			handle, haveHandle = binary.BigEndian.Uint64(v), true
		case attrRuleExprs:
			if e := walkAttrs(v, func(t uint16, _ []byte) {
				if t == attrListElem {
					n++
				}
			}); e != nil {
				inner = e
			}
		}
	})
	if err = cmp.Or(err, inner); err != nil {
		return 0, 0, fmt.Errorf("nftables rule: %w", err)
	}
	if !haveHandle {
		return 0, 0, fmt.Errorf("nftables rule: no handle")
	}
	return handle, n, nil
}

// concerns says whether a change described by ev may have touched the
// table inet name. A message that names no table concerns every table.
func (ev event) concerns(name string) bool {
	if ev.gen {
		return false
	}
	if ev.table == "" {
		return true
	}
	return ev.table == name && (ev.family == nfprotoINet || ev.family == 0)
}
