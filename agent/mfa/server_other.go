//go:build !linux

package mfa

import (
	"context"
	"errors"
	"fmt"
)

// Serve is only implemented on Linux; elsewhere it returns an error wrapping
// errors.ErrUnsupported.
func (s *Server) Serve(ctx context.Context) error {
	return fmt.Errorf("mfa: PAM socket: %w", errors.ErrUnsupported)
}
