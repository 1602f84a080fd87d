//go:build !linux

package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
)

// WatchUevents fails: kernel uevents are Linux's.
func WatchUevents(ctx context.Context, f func(Notification), log *slog.Logger) error {
	return fmt.Errorf("kernel uevents on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
