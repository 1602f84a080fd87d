//go:build !linux && !windows

package netcheck

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("network checks on %s: %w", runtime.GOOS, errors.ErrUnsupported)

type unsupported struct{}

// NewPlatform returns a platform whose every call fails: the network on
// this OS cannot be checked, and the posture says so.
func NewPlatform(PlatformOptions) Platform { return unsupported{} }

func (unsupported) Adapters(context.Context) ([]Adapter, error) { return nil, errUnsupported }
func (unsupported) Routes(context.Context) ([]Route, error)     { return nil, errUnsupported }
func (unsupported) Sockets(context.Context) ([]Socket, error)   { return nil, errUnsupported }
func (unsupported) DNS(context.Context) ([]DNSServer, error)    { return nil, errUnsupported }
func (unsupported) Watch(context.Context, func(string)) error   { return errUnsupported }
func (unsupported) CutUSB(Adapter) error                        { return errUnsupported }
func (unsupported) RestoreUSB(string) error                     { return errUnsupported }
