//go:build windows

package netcheck

// Cutting a USB network adapter off on Windows: the device behind it is
// disabled through SetupAPI (DIF_PROPERTYCHANGE, DICS_DISABLE), as Device
// Manager's "Disable device" does; RestoreUSB enables it again. The
// adapter's PnP instance id (Adapter.USBDevice) names the device.

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// netClassGUID is the network adapters' device setup class.
var netClassGUID = windows.GUID{Data1: 0x4d36e972, Data2: 0xe325, Data3: 0x11ce, Data4: [8]byte{0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1, 0x03, 0x18}}

// errNoDevice: no present network device has the instance id.
var errNoDevice = errors.New("no network device present with that instance id")

// setDeviceState enables or disables the present network-class device
// whose instance id is id.
func setDeviceState(id string, state windows.DICS_STATE) error {
	if !strings.HasPrefix(strings.ToUpper(id), `USB\`) {
		return fmt.Errorf("%q is not a USB device instance id", id)
	}
	set, err := windows.SetupDiGetClassDevsEx(&netClassGUID, "", 0, windows.DIGCF_PRESENT, 0, "")
	if err != nil {
		return fmt.Errorf("SetupDiGetClassDevsEx(net): %w", err)
	}
	defer set.Close()
	for i := 0; ; i++ {
		data, err := windows.SetupDiEnumDeviceInfo(set, i)
		if errors.Is(err, windows.ERROR_NO_MORE_ITEMS) {
			return fmt.Errorf("%s: %w", id, errNoDevice)
		}
		if err != nil {
			return fmt.Errorf("SetupDiEnumDeviceInfo: %w", err)
		}
		got, err := set.DeviceInstanceID(data)
		if err != nil || !strings.EqualFold(got, id) {
			continue
		}
		params := windows.PropChangeParams{
			ClassInstallHeader: *windows.MakeClassInstallHeader(windows.DIF_PROPERTYCHANGE),
			StateChange:        state,
			Scope:              windows.DICS_FLAG_GLOBAL,
		}
		if err := set.SetClassInstallParams(data, &params.ClassInstallHeader, uint32(unsafe.Sizeof(params))); err != nil {
			return fmt.Errorf("%s: SetupDiSetClassInstallParams: %w", id, err)
		}
		if err := set.CallClassInstaller(windows.DIF_PROPERTYCHANGE, data); err != nil {
			return fmt.Errorf("%s: SetupDiCallClassInstaller(DIF_PROPERTYCHANGE): %w", id, err)
		}
		return nil
	}
}
