package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// maxNetworkPolicyBytes bounds the stored network policy; the collector's
// own limits (package netpolicy) keep a valid one far below it.
const maxNetworkPolicyBytes = 1 << 20

// NetworkPolicy is the stored network policy: the one the collector pushes
// to every agent.
type NetworkPolicy struct {
	// Policy is the NetworkPolicy message, marshalled protobuf, with its
	// version filled and without the collector's addresses.
	Policy []byte
	// Version is the policy's version (NetworkPolicy.version).
	Version   string
	UpdatedAt time.Time
	// UpdatedBy is the operator who set it (their audit actor).
	UpdatedBy string
}

func checkNetworkPolicy(p NetworkPolicy) error {
	switch {
	case len(p.Policy) == 0:
		return errors.New("network policy is empty")
	case len(p.Policy) > maxNetworkPolicyBytes:
		return fmt.Errorf("network policy of %d bytes, at most %d", len(p.Policy), maxNetworkPolicyBytes)
	case p.Version == "":
		return errors.New("network policy version is empty")
	case len(p.Version) > 64:
		return errors.New("network policy version longer than 64 bytes")
	case p.UpdatedAt.IsZero():
		return errors.New("network policy updated_at is required")
	case p.UpdatedBy == "":
		return errors.New("network policy updated_by is required")
	}
	return storableTime("updated_at", p.UpdatedAt)
}

const qNetworkPolicy = `SELECT policy, version, updated_at, updated_by FROM network_policy WHERE id = 1`

func scanNetworkPolicy(row *sql.Row) (NetworkPolicy, error) {
	var p NetworkPolicy
	err := row.Scan(&p.Policy, &p.Version, scanTime(&p.UpdatedAt), &p.UpdatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return NetworkPolicy{}, ErrNotFound
	}
	return p, err
}

// NetworkPolicy implements Store: the stored network policy, ErrNotFound
// when none was ever set.
func (s *DB) NetworkPolicy(ctx context.Context) (NetworkPolicy, error) {
	p, err := scanNetworkPolicy(s.readRow(ctx, qNetworkPolicy))
	if err != nil {
		return NetworkPolicy{}, fmt.Errorf("store: network policy: %w", err)
	}
	return p, nil
}

// SetNetworkPolicy implements Store: it replaces the network policy with p
// and appends the audit entry audit makes of the policy before (found
// false when there was none), in one transaction. With expectVersion not
// "", it changes nothing and returns an error wrapping ErrConflict unless
// the stored policy has that version. It returns the policy before.
func (s *DB) SetNetworkPolicy(ctx context.Context, p NetworkPolicy, expectVersion string, audit func(before NetworkPolicy, found bool) AuditEntry) (NetworkPolicy, bool, error) {
	var (
		before NetworkPolicy
		found  bool
	)
	err := checkNetworkPolicy(p)
	if err == nil && audit == nil {
		err = errors.New("audit is required")
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			var err error
			before, err = scanNetworkPolicy(tx.queryRow(ctx, qNetworkPolicy))
			switch {
			case errors.Is(err, ErrNotFound):
				before = NetworkPolicy{}
			case err != nil:
				return err
			default:
				found = true
			}
			if expectVersion != "" && expectVersion != before.Version {
				if !found {
					return fmt.Errorf("%w: no network policy is set, expected version %s", ErrConflict, expectVersion)
				}
				return fmt.Errorf("%w: version %s is in force, expected %s", ErrConflict, before.Version, expectVersion)
			}
			a := audit(before, found)
			if err := checkAudit(&a); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `INSERT INTO network_policy (id, policy, version, updated_at, updated_by)
	VALUES (1, $1, $2, $3, $4)
	ON CONFLICT (id) DO UPDATE SET policy = excluded.policy, version = excluded.version,
		updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
				p.Policy, p.Version, dbTime(p.UpdatedAt), p.UpdatedBy); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return NetworkPolicy{}, false, fmt.Errorf("store: set network policy %s: %w", p.Version, err)
	}
	return before, found, nil
}
