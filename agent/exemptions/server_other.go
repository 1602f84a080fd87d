//go:build !linux && !windows

package exemptions

import (
	"context"
	"errors"
	"fmt"
)

// Serve is only implemented on Linux, where the peer's credentials can be
// checked; elsewhere it returns an error wrapping errors.ErrUnsupported.
func (s *ControlServer) Serve(ctx context.Context) error {
	return fmt.Errorf("exemptions: control socket: %w", errors.ErrUnsupported)
}
