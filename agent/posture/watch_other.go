//go:build !linux

package posture

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

// platformWatcher: no change notifications here (Windows would need
// WM_DEVICECHANGE, NotifyIpInterfaceChange and ReadDirectoryChangesW); the
// agent polls instead.
type platformWatcher struct{}

func newPlatformWatcher(func(string)) (*platformWatcher, error) {
	return nil, fmt.Errorf("posture: change notifications on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (*platformWatcher) run(context.Context) error { return errors.ErrUnsupported }

func (*platformWatcher) watchFiles(map[string][]string) error { return errors.ErrUnsupported }
