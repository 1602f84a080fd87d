package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// auditGenesis is the PrevHash of the first audit entry: 32 zero bytes.
var auditGenesis = make([]byte, sha256.Size)

// AuditHash returns the hash that chains e to its predecessor:
//
//	SHA-256(prevHash || canonical(e))
//
// where prevHash is the predecessor's Hash (32 zero bytes for the first
// entry) and canonical(e) is the concatenation of
//
//	ID      8 bytes, big-endian two's complement int64
//	Time    8 bytes, big-endian two's complement int64: Unix nanoseconds (UTC)
//	Actor   8-byte big-endian byte length, then the bytes (UTF-8 as given)
//	Action  likewise
//	Target  likewise
//	Detail  likewise
//
// Every variable-length field is length-prefixed, so no two different
// entries have the same encoding. e.PrevHash and e.Hash are not read. Every
// backend computes the hash this way, so an exported log can be verified
// without mnguard.
func AuditHash(prevHash []byte, e AuditEntry) []byte {
	h := sha256.New()
	h.Write(prevHash)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(e.ID))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Time.UnixNano()))
	h.Write(b[:])
	for _, f := range []string{e.Actor, e.Action, e.Target, e.Detail} {
		binary.BigEndian.PutUint64(b[:], uint64(len(f)))
		h.Write(b[:])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// AuditChainError says where the audit chain is broken: ID is the first
// entry that does not follow from its predecessor (a gap, a wrong PrevHash)
// or whose Hash does not match its content.
type AuditChainError struct {
	ID     int64
	Reason string
}

func (e *AuditChainError) Error() string {
	return fmt.Sprintf("audit chain broken at entry %d: %s", e.ID, e.Reason)
}

// auditChecker verifies an audit log entry by entry, in ID order.
type auditChecker struct {
	prevID   int64
	prevHash []byte
}

func newAuditChecker() *auditChecker { return &auditChecker{prevHash: auditGenesis} }

// check verifies that e follows the entry checked before it (or is the first).
func (c *auditChecker) check(e AuditEntry) error {
	switch want := AuditHash(e.PrevHash, e); {
	case e.ID != c.prevID+1:
		return &AuditChainError{ID: e.ID, Reason: fmt.Sprintf("expected entry %d here: entries are missing", c.prevID+1)}
	case string(e.PrevHash) != string(c.prevHash):
		return &AuditChainError{ID: e.ID, Reason: "prev_hash is not the hash of the entry before"}
	case string(e.Hash) != string(want):
		return &AuditChainError{ID: e.ID, Reason: "hash does not match the entry's content"}
	}
	c.prevID, c.prevHash = e.ID, e.Hash
	return nil
}
