//go:build windows

package posture

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/windows"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func newPlatformUSBLister() USBLister { return setupAPILister{} }

// setupAPILister lists USB devices through SetupAPI: every present device
// node of the USB enumerator, devices and the interface nodes of composite
// devices alike. gousb cannot be used on Windows: it needs WinUSB bound to a
// device to see it, and storage devices are bound to usbstor. The nodes are
// assembled into devices by usbDevicesFromWindows.
type setupAPILister struct{}

var (
	// DEVPKEY_Device_Parent, a string property (devpkey.h).
	devpkeyDeviceParent = windows.DEVPROPKEY{
		FmtID: windows.DEVPROPGUID{Data1: 0x4340a6c5, Data2: 0x93fa, Data3: 0x4706, Data4: [8]byte{0x97, 0x2c, 0x7b, 0x64, 0x80, 0x08, 0xa5, 0xa7}},
		PID:   8,
	}
	// DEVPKEY_Device_BusReportedDeviceDesc: the device's own product
	// string, where SPDRP_DEVICEDESC is the INF's generic description.
	devpkeyBusReportedDeviceDesc = windows.DEVPROPKEY{
		FmtID: windows.DEVPROPGUID{Data1: 0x540b947e, Data2: 0x8b40, Data3: 0x45bc, Data4: [8]byte{0xa8, 0xa2, 0x6a, 0x0b, 0x89, 0x4c, 0xbd, 0xa2}},
		PID:   4,
	}
)

func (setupAPILister) ListUSB(ctx context.Context) ([]*mnguardv1.UsbDevice, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	set, err := windows.SetupDiGetClassDevsEx(nil, "USB", 0, windows.DIGCF_PRESENT|windows.DIGCF_ALLCLASSES, 0, "")
	if err != nil {
		return nil, fmt.Errorf("usb: SetupDiGetClassDevsEx: %w", err)
	}
	defer windows.SetupDiDestroyDeviceInfoList(set)

	var nodes []winUSBNode
	var errs []error
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("usb: %w", err)
		}
		data, err := windows.SetupDiEnumDeviceInfo(set, i)
		if errors.Is(err, windows.ERROR_NO_MORE_ITEMS) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("SetupDiEnumDeviceInfo %d: %w", i, err))
			break
		}
		inst, err := windows.SetupDiGetDeviceInstanceId(set, data)
		if err != nil {
			errs = append(errs, fmt.Errorf("SetupDiGetDeviceInstanceId %d: %w", i, err))
			continue
		}
		n := winUSBNode{
			InstanceID:    inst,
			Parent:        deviceStringProperty(set, data, &devpkeyDeviceParent),
			HardwareIDs:   registryStrings(set, data, windows.SPDRP_HARDWAREID),
			CompatibleIDs: registryStrings(set, data, windows.SPDRP_COMPATIBLEIDS),
			Description:   deviceStringProperty(set, data, &devpkeyBusReportedDeviceDesc),
			Manufacturer:  registryString(set, data, windows.SPDRP_MFG),
		}
		if n.Description == "" {
			n.Description = registryString(set, data, windows.SPDRP_DEVICEDESC)
		}
		nodes = append(nodes, n)
	}
	devs, err := usbDevicesFromWindows(nodes)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return devs, fmt.Errorf("usb: %w", errors.Join(errs...))
	}
	return devs, nil
}

// The property readers treat a missing property as empty. x/sys/windows
// indexes its buffer without checking a zero size, so they also recover
// from a panic rather than let one device's odd property stop the agent.

func registryProperty(set windows.DevInfo, data *windows.DevInfoData, prop windows.SPDRP) (v any) {
	defer func() {
		if recover() != nil {
			v = nil
		}
	}()
	v, err := windows.SetupDiGetDeviceRegistryProperty(set, data, prop)
	if err != nil {
		return nil
	}
	return v
}

func registryString(set windows.DevInfo, data *windows.DevInfoData, prop windows.SPDRP) string {
	switch v := registryProperty(set, data, prop).(type) {
	case string:
		return v
	case []string:
		if len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func registryStrings(set windows.DevInfo, data *windows.DevInfoData, prop windows.SPDRP) []string {
	switch v := registryProperty(set, data, prop).(type) {
	case []string:
		return v
	case string:
		if v != "" {
			return []string{v}
		}
	}
	return nil
}

func deviceStringProperty(set windows.DevInfo, data *windows.DevInfoData, key *windows.DEVPROPKEY) (s string) {
	defer func() {
		if recover() != nil {
			s = ""
		}
	}()
	v, err := windows.SetupDiGetDeviceProperty(set, data, key)
	if err != nil {
		return ""
	}
	s, _ = v.(string)
	return s
}
