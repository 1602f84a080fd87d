package nft

import (
	"bytes"
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
	for b := data[4:]; len(b) > 0; {
		if len(b) < 4 {
			return ev, fmt.Errorf("nftables event: %d trailing bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if n < 4 || n > len(b) {
			return ev, fmt.Errorf("nftables event: attribute %d of length %d in %d bytes", t, n, len(b))
		}
		if t == attrTable && !ev.gen {
			v := b[4:n]
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			ev.table = string(v)
		}
		adv := (n + 3) &^ 3
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
	}
	return ev, nil
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
