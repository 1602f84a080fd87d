//go:build windows

package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
)

// NewPlatform returns the Platform of Windows: disks found through SetupAPI
// and made read-only with IOCTL_DISK_SET_DISK_ATTRIBUTES, and the Removable
// Storage Access policy under HKLM for CD/DVD, WPD, floppy and tape
// devices. It needs an administrator (the agent runs as LocalSystem). The
// platform implements Looker, and has EnsurePolicy (see windowsPlatform).
func NewPlatform(o Options) Platform {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(o.TreatAsRemovable) > 0 {
		log.Warn("media.treat_as_removable is ignored on Windows", "patterns", o.TreatAsRemovable)
	}
	return newWindowsPlatform(winAPI{policyRoot: registry.LOCAL_MACHINE, policyKey: winPolicyKey}, log)
}

// PlatformLayers reports no fail-closed layers: Windows has no udev.
func PlatformLayers() (udev, udisks bool) { return false, false }

// Hook is the udev hook; there is no udev on Windows.
func Hook(Options, string) (string, error) {
	return "", fmt.Errorf("udev hook on windows: %w", errors.ErrUnsupported)
}

// winPolicyKey is where the Removable Storage Access policy lives below
// HKLM: one subkey per device class GUID, with values such as Deny_Write.
const winPolicyKey = `SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices`

// winAPI is the real winOS. The policy key is a field so that tests can
// use a key of their own.
type winAPI struct {
	policyRoot registry.Key
	policyKey  string
}

// guidDevinterfaceDisk is GUID_DEVINTERFACE_DISK,
// {53f56307-b6bf-11d0-94f2-00a0c91efb8b}.
var guidDevinterfaceDisk = windows.GUID{Data1: 0x53f56307, Data2: 0xb6bf, Data3: 0x11d0, Data4: [8]byte{0x94, 0xf2, 0x00, 0xa0, 0xc9, 0x1e, 0xfb, 0x8b}}

// Ioctl codes: CTL_CODE(DeviceType, Function, METHOD_BUFFERED, Access).
const (
	ioctlStorageGetDeviceNumber  = 0x2d1080 // IOCTL_STORAGE_BASE, 0x420, FILE_ANY_ACCESS
	ioctlStorageQueryProperty    = 0x2d1400 // IOCTL_STORAGE_BASE, 0x500, FILE_ANY_ACCESS
	ioctlDiskGetLengthInfo       = 0x07405c // IOCTL_DISK_BASE, 0x17, FILE_READ_ACCESS
	ioctlDiskGetDiskAttributes   = 0x0700f0 // IOCTL_DISK_BASE, 0x3c, FILE_ANY_ACCESS
	ioctlDiskSetDiskAttributes   = 0x07c0f4 // IOCTL_DISK_BASE, 0x3d, FILE_READ_ACCESS|FILE_WRITE_ACCESS
	storagePropertyQuerySize     = 12       // STORAGE_PROPERTY_QUERY: StorageDeviceProperty, PropertyStandardQuery
	storageDeviceNumberSize      = 12       // STORAGE_DEVICE_NUMBER: DeviceType, DeviceNumber, PartitionNumber
	crSuccess                    = 0        // CR_SUCCESS
	maxDeviceIDLen               = 200      // MAX_DEVICE_ID_LEN
	maxAncestors                 = 16
	spDeviceInterfaceDetailPath  = 4 // offset of DevicePath in SP_DEVICE_INTERFACE_DETAIL_DATA_W
	spDeviceInterfaceDetailSize  = 8 // its cbSize on 64-bit Windows (pshpack8)
	spDeviceInterfaceDetailSize4 = 6 // its cbSize on 32-bit Windows (pshpack1)
)

// SetupAPI and Configuration Manager functions that x/sys/windows lacks.
var (
	setupapi                            = windows.NewLazySystemDLL("setupapi.dll")
	procSetupDiEnumDeviceInterfaces     = setupapi.NewProc("SetupDiEnumDeviceInterfaces")
	procSetupDiGetDeviceInterfaceDetail = setupapi.NewProc("SetupDiGetDeviceInterfaceDetailW")
	cfgmgr32                            = windows.NewLazySystemDLL("cfgmgr32.dll")
	procCMGetParent                     = cfgmgr32.NewProc("CM_Get_Parent")
	procCMGetDeviceID                   = cfgmgr32.NewProc("CM_Get_Device_IDW")
)

// spDeviceInterfaceData is SP_DEVICE_INTERFACE_DATA; Go lays it out as
// setupapi.h does on 386 (pshpack1 adds no padding to it) and on 64-bit.
type spDeviceInterfaceData struct {
	cbSize             uint32
	InterfaceClassGUID windows.GUID
	Flags              uint32
	_                  uintptr
}

func (winAPI) Disks(ctx context.Context) ([]winDisk, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	set, err := windows.SetupDiGetClassDevsEx(&guidDevinterfaceDisk, "", 0, windows.DIGCF_PRESENT|windows.DIGCF_DEVICEINTERFACE, 0, "")
	if err != nil {
		return nil, fmt.Errorf("SetupDiGetClassDevsEx: %w", err)
	}
	defer windows.SetupDiDestroyDeviceInfoList(set)
	var disks []winDisk
	var errs []error
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return disks, err
		}
		data, err := windows.SetupDiEnumDeviceInfo(set, i)
		if errors.Is(err, windows.ERROR_NO_MORE_ITEMS) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("SetupDiEnumDeviceInfo %d: %w", i, err))
			break
		}
		d, err := readDisk(set, data)
		switch {
		case errors.Is(err, ErrVanished):
		case err != nil:
			errs = append(errs, err)
		default:
			disks = append(disks, d)
		}
	}
	return disks, errors.Join(errs...)
}

// readDisk reads what Windows says about one device of the disk interface
// set.
func readDisk(set windows.DevInfo, data *windows.DevInfoData) (winDisk, error) {
	inst, err := windows.SetupDiGetDeviceInstanceId(set, data)
	if err != nil {
		return winDisk{}, winErr("SetupDiGetDeviceInstanceId", err)
	}
	path, err := interfacePath(set, data, &guidDevinterfaceDisk)
	if err != nil {
		return winDisk{}, winErr(inst+": disk interface", err)
	}
	d, err := statDisk(path)
	if err != nil {
		return winDisk{}, err
	}
	d.InstanceID, d.Ancestors = inst, ancestors(data.DevInst)
	return d, nil
}

// statDisk asks the disk at path for its number, descriptor and size.
func statDisk(path string) (winDisk, error) {
	d := winDisk{Path: path}
	h, err := openDisk(path, windows.GENERIC_READ)
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		h, err = openDisk(path, 0) // enough for all but the size
	}
	if err != nil {
		return winDisk{}, err
	}
	defer windows.CloseHandle(h)

	num := make([]byte, storageDeviceNumberSize)
	if _, err := ioctl(h, ioctlStorageGetDeviceNumber, nil, num); err != nil {
		return winDisk{}, winErr(path+": IOCTL_STORAGE_GET_DEVICE_NUMBER", err)
	}
	d.Number = int(binary.LittleEndian.Uint32(num[4:]))
	desc, err := queryStorageDescriptor(h)
	if err != nil {
		return winDisk{}, winErr(path+": IOCTL_STORAGE_QUERY_PROPERTY", err)
	}
	sd, err := parseStorageDeviceDescriptor(desc)
	if err != nil {
		return winDisk{}, fmt.Errorf("%s: %w", path, err)
	}
	d.BusType, d.Removable, d.Vendor, d.Product = sd.BusType, sd.Removable, sd.Vendor, sd.Product

	// The size is for the report only: a card reader without a card
	// answers ERROR_NOT_READY, and a handle without read access
	// ERROR_ACCESS_DENIED.
	length := make([]byte, 8)
	if n, err := ioctl(h, ioctlDiskGetLengthInfo, nil, length); err == nil && n == 8 {
		d.Size = binary.LittleEndian.Uint64(length)
	}
	return d, nil
}

// queryStorageDescriptor returns the disk's STORAGE_DEVICE_DESCRIPTOR.
func queryStorageDescriptor(h windows.Handle) ([]byte, error) {
	query := make([]byte, storagePropertyQuerySize) // StorageDeviceProperty, PropertyStandardQuery
	buf := make([]byte, 1024)
	for {
		n, err := ioctl(h, ioctlStorageQueryProperty, query, buf)
		if err != nil && !errors.Is(err, windows.ERROR_MORE_DATA) {
			return nil, err
		}
		// Size says how much the whole descriptor needs.
		if size := binary.LittleEndian.Uint32(buf[4:]); n >= 8 && int(size) > len(buf) && size <= 1<<16 {
			buf = make([]byte, size)
			continue
		}
		return buf[:n], nil
	}
}

// interfacePath returns the path of the device's interface of a class.
func interfacePath(set windows.DevInfo, data *windows.DevInfoData, class *windows.GUID) (string, error) {
	ifd := spDeviceInterfaceData{cbSize: uint32(unsafe.Sizeof(spDeviceInterfaceData{}))}
	r, _, e := procSetupDiEnumDeviceInterfaces.Call(uintptr(set), uintptr(unsafe.Pointer(data)),
		uintptr(unsafe.Pointer(class)), 0, uintptr(unsafe.Pointer(&ifd)))
	if r == 0 {
		return "", fmt.Errorf("SetupDiEnumDeviceInterfaces: %w", e)
	}
	var need uint32
	r, _, e = procSetupDiGetDeviceInterfaceDetail.Call(uintptr(set), uintptr(unsafe.Pointer(&ifd)), 0, 0, uintptr(unsafe.Pointer(&need)), 0)
	if r == 0 && !errors.Is(e, windows.ERROR_INSUFFICIENT_BUFFER) {
		return "", fmt.Errorf("SetupDiGetDeviceInterfaceDetail: %w", e)
	}
	if need <= spDeviceInterfaceDetailPath || need > 1<<16 {
		return "", fmt.Errorf("SetupDiGetDeviceInterfaceDetail: odd size %d", need)
	}
	buf := make([]uint64, (need+7)/8) // 8-aligned, as the structure wants
	p := unsafe.Pointer(&buf[0])
	*(*uint32)(p) = spDeviceInterfaceDetailSize
	if unsafe.Sizeof(uintptr(0)) == 4 {
		*(*uint32)(p) = spDeviceInterfaceDetailSize4
	}
	r, _, e = procSetupDiGetDeviceInterfaceDetail.Call(uintptr(set), uintptr(unsafe.Pointer(&ifd)), uintptr(p), uintptr(need), 0, 0)
	if r == 0 {
		return "", fmt.Errorf("SetupDiGetDeviceInterfaceDetail: %w", e)
	}
	path := unsafe.Slice((*uint16)(unsafe.Add(p, spDeviceInterfaceDetailPath)), (need-spDeviceInterfaceDetailPath)/2)
	return windows.UTF16ToString(path), nil
}

// ancestors returns the instance IDs of the device's parent and its
// parent's parent and so on, without the root (HTREE\ROOT\0).
func ancestors(dev windows.DEVINST) []string {
	var ids []string
	for range maxAncestors {
		var parent windows.DEVINST
		if r, _, _ := procCMGetParent.Call(uintptr(unsafe.Pointer(&parent)), uintptr(dev), 0); r != crSuccess {
			break
		}
		var buf [maxDeviceIDLen + 1]uint16
		if r, _, _ := procCMGetDeviceID.Call(uintptr(parent), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0); r != crSuccess {
			break
		}
		id := windows.UTF16ToString(buf[:])
		if strings.HasPrefix(strings.ToUpper(id), `HTREE\ROOT`) {
			break
		}
		ids = append(ids, id)
		dev = parent
	}
	return ids
}

func (winAPI) ReadOnly(path string) (bool, error) {
	h, err := openDisk(path, 0)
	if err != nil {
		return false, err
	}
	defer windows.CloseHandle(h)
	attrs := make([]byte, getDiskAttributesSize)
	n, err := ioctl(h, ioctlDiskGetDiskAttributes, nil, attrs)
	if err != nil {
		return false, winErr(path+": IOCTL_DISK_GET_DISK_ATTRIBUTES", err)
	}
	return parseGetDiskAttributes(attrs[:n])
}

func (winAPI) SetReadOnly(path string, ro bool) error {
	h, err := openDisk(path, windows.GENERIC_READ|windows.GENERIC_WRITE)
	if err != nil {
		return err
	}
	defer windows.CloseHandle(h)
	if _, err := ioctl(h, ioctlDiskSetDiskAttributes, setDiskAttributes(ro), nil); err != nil {
		return winErr(path+": IOCTL_DISK_SET_DISK_ATTRIBUTES", err)
	}
	return nil
}

func (w winAPI) PolicyValue(class string) (uint32, bool, error) {
	name := w.policyKey + `\` + class
	k, err := registry.OpenKey(w.policyRoot, name, registry.QUERY_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("open %s: %w", name, err)
	}
	defer k.Close()
	v, typ, err := k.GetIntegerValue("Deny_Write")
	switch {
	case errors.Is(err, registry.ErrNotExist), errors.Is(err, registry.ErrUnexpectedType):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("read %s\\Deny_Write: %w", name, err)
	case typ != registry.DWORD:
		return 0, false, nil
	}
	return uint32(v), true, nil
}

func (w winAPI) SetPolicyValue(class string, v uint32) error {
	name := w.policyKey + `\` + class
	k, _, err := registry.CreateKey(w.policyRoot, name, registry.SET_VALUE)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer k.Close()
	if err := k.SetDWordValue("Deny_Write", v); err != nil {
		return fmt.Errorf("write %s\\Deny_Write: %w", name, err)
	}
	return nil
}

// openDisk opens a disk for ioctls, sharing it with everyone else.
func openDisk(path string, access uint32) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, fmt.Errorf("open %q: %w", path, err)
	}
	h, err := windows.CreateFile(p, access, windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE, nil, windows.OPEN_EXISTING, 0, 0)
	if err != nil {
		return 0, winErr("open "+path, err)
	}
	return h, nil
}

// ioctl sends a buffered ioctl and returns the number of bytes written to
// out.
func ioctl(h windows.Handle, code uint32, in, out []byte) (int, error) {
	var inp, outp *byte
	if len(in) > 0 {
		inp = &in[0]
	}
	if len(out) > 0 {
		outp = &out[0]
	}
	var n uint32
	err := windows.DeviceIoControl(h, code, inp, uint32(len(in)), outp, uint32(len(out)), &n, nil)
	return int(n), err
}

// winErr wraps err, and ErrVanished too when it says the device is gone.
func winErr(what string, err error) error {
	for _, gone := range []error{
		windows.ERROR_FILE_NOT_FOUND, windows.ERROR_PATH_NOT_FOUND, windows.ERROR_DEV_NOT_EXIST,
		windows.ERROR_NO_SUCH_DEVICE, windows.ERROR_DEVICE_NOT_CONNECTED, windows.ERROR_DEVICE_REMOVED,
		windows.ERROR_NO_SUCH_DEVINST,
	} {
		if errors.Is(err, gone) {
			return fmt.Errorf("%s: %w (%w)", what, ErrVanished, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
