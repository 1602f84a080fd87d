//go:build !linux && !windows

package posture

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func newPlatformUSBLister() USBLister { return unsupportedUSB{} }

// unsupportedUSB is the lister where there is no USB inventory: systems
// other than Linux and Windows.
type unsupportedUSB struct{}

func (unsupportedUSB) ListUSB(context.Context) ([]*mnguardv1.UsbDevice, error) {
	return nil, fmt.Errorf("usb inventory on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
