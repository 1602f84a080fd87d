//go:build !linux && !windows

package media

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("removable-media enforcement on %s: %w", runtime.GOOS, errors.ErrUnsupported)

type unsupported struct{}

// NewPlatform returns a platform whose every call fails: media on this OS
// cannot be enforced, and the posture says so.
func NewPlatform(Options) Platform { return unsupported{} }

// PlatformLayers reports no fail-closed layers.
func PlatformLayers() (udev, udisks bool) { return false, false }

func (unsupported) Scan(context.Context) ([]Device, error)          { return nil, errUnsupported }
func (unsupported) Protect(context.Context, Device) (Result, error) { return Result{}, errUnsupported }
func (unsupported) Watch(context.Context, func(Notification)) error { return errUnsupported }

// Hook is the udev hook; there is no udev here.
func Hook(Options, string) (string, error) { return "", errUnsupported }
