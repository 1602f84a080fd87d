//go:build (!linux && !windows) || (linux && !cgo)

package posture

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func newPlatformUSBLister() USBLister { return unsupportedUSB{} }

// unsupportedUSB is the lister where there is no USB inventory: other
// systems, and Linux builds without cgo (gousb needs libusb).
type unsupportedUSB struct{}

func (unsupportedUSB) ListUSB(context.Context) ([]*mnguardv1.UsbDevice, error) {
	what := runtime.GOOS
	if runtime.GOOS == "linux" {
		what = "linux without cgo"
	}
	return nil, fmt.Errorf("usb inventory on %s: %w", what, errors.ErrUnsupported)
}
