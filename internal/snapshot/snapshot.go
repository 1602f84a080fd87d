// Package snapshot holds what agent and collector agree on about posture
// snapshots: how to tell whether one differs from another.
package snapshot

import (
	"crypto/sha256"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
)

// Fingerprint identifies a posture's content without its volatile fields
// (collection time and uptime): two snapshots of an unchanged terminal have
// the same fingerprint. The agent reports early when it changes; the
// collector keeps a history row only when it changes.
func Fingerprint(p *mnguardv1.Posture) []byte {
	if p == nil {
		return nil
	}
	c := proto.Clone(p).(*mnguardv1.Posture)
	c.CollectedAt = nil
	c.UptimeSeconds = 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshal fails only for invalid UTF-8 in strings, which the
		// collector rejects before it gets here; hash what we can.
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return sum[:]
}
