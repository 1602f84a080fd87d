//go:build !linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// netnsDialer: network namespaces are Linux's; nil for "" (the test's
// own), a dialer that fails otherwise.
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if ns == "" {
		return nil
	}
	return func(context.Context, string, string) (net.Conn, error) {
		return nil, fmt.Errorf("network namespace %s: %w", ns, errors.ErrUnsupported)
	}
}
