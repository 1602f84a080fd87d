//go:build !linux

package nft

import (
	"context"
	"errors"
	"fmt"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Enforcer is unavailable outside Linux: every method says so.
type Enforcer struct{ table string }

var errUnsupported = fmt.Errorf("nftables: %w", errors.ErrUnsupported)

// New returns an Enforcer whose methods fail with errors.ErrUnsupported.
func New(o Options) *Enforcer {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	return &Enforcer{table: o.Table}
}

// Mechanism names the table.
func (e *Enforcer) Mechanism() string { return "nftables table inet " + e.table }

// Apply fails: there is no nftables here.
func (e *Enforcer) Apply(context.Context, *netpolicy.Policy) error { return errUnsupported }

// Check fails: there is no nftables here.
func (e *Enforcer) Check(context.Context, *netpolicy.Policy) (bool, string, error) {
	return false, "", errUnsupported
}

// Remove fails: there is no nftables here.
func (e *Enforcer) Remove(context.Context) error { return errUnsupported }

// Watch fails: there is no nftables here.
func (e *Enforcer) Watch(context.Context, func()) error { return errUnsupported }
