package media

// Tests of the Windows platform's logic with a fake winOS; they run on
// every OS. media_windows_test.go tests the real winOS.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Disks as Windows describes them, from real machines.
var (
	winUSBStick = winDisk{
		Number:     2,
		Path:       `\\?\usbstor#disk&ven_sandisk&prod_cruzer_blade&rev_1.00#4c530001230809116354&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `USBSTOR\DISK&VEN_SANDISK&PROD_CRUZER_BLADE&REV_1.00\4C530001230809116354&0`,
		Ancestors: []string{
			`USB\VID_0781&PID_5567\4C530001230809116354`,
			`USB\ROOT_HUB30\4&1D1E4C8&0&0`,
			`PCI\VEN_8086&DEV_A36D&SUBSYS_08551028&REV_10\3&11583659&0&A0`,
			`ACPI\PNP0A08\0`,
		},
		BusType: winBusUSB, Removable: true, Vendor: "SanDisk", Product: "Cruzer Blade", Size: 16008609792,
	}
	// An SD card in a laptop's built-in reader (sdstor on sdbus): no USB,
	// and an instance ID that Windows made up.
	winSDCard = winDisk{
		Number:     1,
		Path:       `\\?\sd#vid_03&oid_5344&pid_sd32g&rev_8.0#5&3a2a7c6f&0&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `SD\VID_03&OID_5344&PID_SD32G&REV_8.0\5&3A2A7C6F&0&0`,
		Ancestors:  []string{`PCI\VEN_10EC&DEV_5227&SUBSYS_07E61028&REV_01\4&2A1C9B3D&0&00E4`, `ACPI\PNP0A08\0`},
		BusType:    winBusSD, Removable: true, Product: "SD32G", Size: 31914983424,
	}
	winSATADisk = winDisk{
		Number:     0,
		Path:       `\\?\scsi#disk&ven_&prod_samsung_ssd_860#4&2a6c6f2e&0&000000#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `SCSI\DISK&VEN_&PROD_SAMSUNG_SSD_860\4&2A6C6F2E&0&000000`,
		Ancestors:  []string{`PCI\VEN_8086&DEV_A352&SUBSYS_08551028&REV_10\3&11583659&0&B8`, `ACPI\PNP0A08\0`},
		BusType:    0xb, Product: "Samsung SSD 860 EVO 500GB", Size: 500107862016,
	}
	winFirewireDisk = winDisk{
		Number:     3,
		Path:       `\\?\sbp2#lacie&d2_quadra&lun0#0001d202e0c00a4c#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `SBP2\LACIE&D2_QUADRA&LUN0\0001D202E0C00A4C`,
		Ancestors:  []string{`1394\LACIE&D2_QUADRA\0001D202E0C00A4C`, `PCI\VEN_104C&DEV_8023\4&1B2F3C&0&10F0`},
		BusType:    winBus1394, Vendor: "LaCie", Product: "d2 Quadra", Size: 1000204886016,
	}
	// A USB-attached SCSI (UAS) enclosure that says it is SCSI.
	winUASDisk = winDisk{
		Number:     4,
		Path:       `\\?\scsi#disk&ven_asmt&prod_2115#7&1e4f6a2&0&000000#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `SCSI\DISK&VEN_ASMT&PROD_2115\7&1E4F6A2&0&000000`,
		Ancestors:  []string{`USB\VID_174C&PID_55AA\00000000000000000000`, `USB\ROOT_HUB30\4&1D1E4C8&0&0`},
		BusType:    0x1, Vendor: "ASMT", Product: "2115", Size: 240057409536,
	}
	// A stick whose storage is one function of a composite device.
	winCompositeStick = winDisk{
		Number:     5,
		Path:       `\\?\usbstor#disk&ven_sandisk&prod_u3_cruzer_micro&rev_8.02#0774910a0f61b9d8&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `USBSTOR\DISK&VEN_SANDISK&PROD_U3_CRUZER_MICRO&REV_8.02\0774910A0F61B9D8&0`,
		Ancestors:  []string{`USB\VID_0781&PID_5406&MI_00\7&2A1C9B3D&0&0000`, `USB\VID_0781&PID_5406\0774910A0F61B9D8`, `USB\ROOT_HUB20\4&2851D18A&0`},
		BusType:    winBusUSB, Removable: true, Vendor: "SanDisk", Product: "U3 Cruzer Micro",
	}
	// A cheap stick without a serial number: Windows made one up.
	winNoSerialStick = winDisk{
		Number:     6,
		Path:       `\\?\usbstor#disk&ven_generic&prod_flash_disk&rev_8.07#6&1a2b3c4d&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `USBSTOR\DISK&VEN_GENERIC&PROD_FLASH_DISK&REV_8.07\6&1A2B3C4D&0`,
		Ancestors:  []string{`USB\VID_058F&PID_6387\5&2F3A6B0&0&2`},
		BusType:    winBusUSB, Removable: true, Vendor: "Generic", Product: "Flash Disk",
	}
	// A ZIP drive on ATAPI: removable media on no removable bus.
	winZIPDisk = winDisk{
		Number: 7, Path: `\\?\ide#diskiomega_zip_100#5&1f2e3d4c&0&0.0.0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `IDE\DISKIOMEGA_ZIP_100\5&1F2E3D4C&0&0.0.0`,
		BusType:    0x2, Removable: true, Vendor: "IOMEGA", Product: "ZIP 100",
	}
	// A mounted VHD.
	winVHD = winDisk{
		Number: 8, Path: `\\?\scsi#disk&ven_msft&prod_virtual_disk#2&1f4adffe&0&000001#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`,
		InstanceID: `SCSI\DISK&VEN_MSFT&PROD_VIRTUAL_DISK\2&1F4ADFFE&0&000001`,
		Ancestors:  []string{`ROOT\VHDMP\0000`},
		BusType:    0xf, Vendor: "Msft", Product: "Virtual Disk",
	}
)

func TestClassifyWinDisk(t *testing.T) {
	tests := []struct {
		name string
		disk winDisk
		want Device
		ok   bool
	}{
		{"usb stick", winUSBStick, Device{
			Name: "PhysicalDrive2", SysPath: winUSBStick.Path, Bus: BusUSB, Reason: "bus type usb",
			VendorID: "0781", ProductID: "5567", Serial: "4C530001230809116354",
			Model: "SanDisk Cruzer Blade", SizeBytes: 16008609792,
		}, true},
		{"sd card in a built-in reader", winSDCard, Device{
			Name: "PhysicalDrive1", SysPath: winSDCard.Path, Bus: BusMMC, Reason: "bus type sd",
			Model: "SD32G", SizeBytes: 31914983424,
		}, true},
		{"fixed sata disk", winSATADisk, Device{}, false},
		{"1394 disk", winFirewireDisk, Device{
			Name: "PhysicalDrive3", SysPath: winFirewireDisk.Path, Bus: BusFirewire, Reason: "bus type 1394",
			Model: "LaCie d2 Quadra", SizeBytes: 1000204886016,
		}, true},
		{"uas disk saying scsi", winUASDisk, Device{
			Name: "PhysicalDrive4", SysPath: winUASDisk.Path, Bus: BusUSB,
			Reason:   `usb ancestor USB\VID_174C&PID_55AA\00000000000000000000`,
			VendorID: "174c", ProductID: "55aa", Serial: "00000000000000000000",
			Model: "ASMT 2115", SizeBytes: 240057409536,
		}, true},
		{"stick in a composite device", winCompositeStick, Device{
			Name: "PhysicalDrive5", SysPath: winCompositeStick.Path, Bus: BusUSB, Reason: "bus type usb",
			VendorID: "0781", ProductID: "5406", Serial: "0774910A0F61B9D8", Model: "SanDisk U3 Cruzer Micro",
		}, true},
		{"stick without a serial", winNoSerialStick, Device{
			Name: "PhysicalDrive6", SysPath: winNoSerialStick.Path, Bus: BusUSB, Reason: "bus type usb",
			VendorID: "058f", ProductID: "6387", Model: "Generic Flash Disk",
		}, true},
		{"zip drive", winZIPDisk, Device{
			Name: "PhysicalDrive7", SysPath: winZIPDisk.Path, Bus: BusOther, Reason: "removable media", Model: "IOMEGA ZIP 100",
		}, true},
		{"vhd", winVHD, Device{}, false},
		{"nothing known", winDisk{Number: 9}, Device{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := classifyWinDisk(tt.disk)
			if ok != tt.ok {
				t.Fatalf("removable = %v, want %v", ok, tt.ok)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// winDescriptor builds a STORAGE_DEVICE_DESCRIPTOR.
func winDescriptor(removable bool, bus uint32, vendor, product string) []byte {
	b := make([]byte, storageDescriptorHeaderSize)
	if removable {
		b[10] = 1
	}
	binary.LittleEndian.PutUint32(b[28:], bus)
	for _, f := range []struct {
		at int
		s  string
	}{{12, vendor}, {16, product}, {20, "1.00"}, {24, "4C530001230809116354"}} {
		if f.s == "" {
			continue
		}
		binary.LittleEndian.PutUint32(b[f.at:], uint32(len(b)))
		b = append(append(b, f.s...), 0)
	}
	binary.LittleEndian.PutUint32(b[0:], 1)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	return b
}

func TestWinParseStorageDeviceDescriptor(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    storageDescriptor
		wantErr bool
	}{
		{"usb stick", winDescriptor(true, winBusUSB, "SanDisk ", "Cruzer Blade    "),
			storageDescriptor{Removable: true, BusType: winBusUSB, Vendor: "SanDisk", Product: "Cruzer Blade"}, false},
		{"no vendor", winDescriptor(false, 0xb, "", "Samsung SSD 860 EVO 500GB"),
			storageDescriptor{BusType: 0xb, Product: "Samsung SSD 860 EVO 500GB"}, false},
		{"offset outside", func() []byte {
			b := winDescriptor(true, winBusSD, "x", "y")
			binary.LittleEndian.PutUint32(b[16:], 1000)
			binary.LittleEndian.PutUint32(b[12:], 3) // inside the header
			return b
		}(), storageDescriptor{Removable: true, BusType: winBusSD}, false},
		{"no terminating nul", func() []byte {
			b := winDescriptor(false, winBusUSB, "", "abc")
			return b[:len(b)-1]
		}(), storageDescriptor{BusType: winBusUSB, Product: "abc"}, false},
		{"size shorter than the buffer", func() []byte {
			b := winDescriptor(false, winBusUSB, "", "abc")
			binary.LittleEndian.PutUint32(b[4:], storageDescriptorHeaderSize)
			return b
		}(), storageDescriptor{BusType: winBusUSB}, false},
		{"short", make([]byte, 35), storageDescriptor{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStorageDeviceDescriptor(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func FuzzWinParseStorageDeviceDescriptor(f *testing.F) {
	f.Add(winDescriptor(true, winBusUSB, "SanDisk", "Cruzer Blade"))
	f.Add(winDescriptor(false, 0xb, "", "Samsung SSD"))
	f.Add(make([]byte, storageDescriptorHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseStorageDeviceDescriptor(b)
		if err != nil {
			return
		}
		if len(d.Vendor) > len(b) || len(d.Product) > len(b) || strings.ContainsRune(d.Vendor+d.Product, 0) {
			t.Fatalf("odd strings %q %q", d.Vendor, d.Product)
		}
	})
}

func TestWinDiskAttributes(t *testing.T) {
	for _, ro := range []bool{true, false} {
		b := setDiskAttributes(ro)
		if len(b) != 40 || binary.LittleEndian.Uint32(b) != 40 {
			t.Fatalf("SET_DISK_ATTRIBUTES is %d bytes, Version %d; want 40, 40", len(b), binary.LittleEndian.Uint32(b))
		}
		if b[4] != 0 {
			t.Errorf("Persist = %d, want 0", b[4])
		}
		wantAttrs := uint64(0)
		if ro {
			wantAttrs = 2
		}
		if a, m := binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]); a != wantAttrs || m != 2 {
			t.Errorf("ro=%v: Attributes %#x, AttributesMask %#x; want %#x, 0x2", ro, a, m, wantAttrs)
		}
	}
	get := make([]byte, 16)
	binary.LittleEndian.PutUint32(get, 16)
	binary.LittleEndian.PutUint64(get[8:], 0x3) // offline and read-only
	if ro, err := parseGetDiskAttributes(get); err != nil || !ro {
		t.Errorf("parseGetDiskAttributes(offline|read-only) = %v, %v", ro, err)
	}
	binary.LittleEndian.PutUint64(get[8:], 0x1)
	if ro, err := parseGetDiskAttributes(get); err != nil || ro {
		t.Errorf("parseGetDiskAttributes(offline) = %v, %v", ro, err)
	}
	if _, err := parseGetDiskAttributes(get[:8]); err == nil {
		t.Error("parseGetDiskAttributes of 8 bytes: no error")
	}
}

// fakeWinOS is a Windows with disks, their read-only attribute and the
// policy values in memory.
type fakeWinOS struct {
	mu       sync.Mutex
	disks    []winDisk
	disksErr error
	ro       map[string]bool // by path
	policy   map[string]uint32

	// setErr is what SetReadOnly returns; with vanishOnSet the disk is gone
	// after SetReadOnly; with sticky SetReadOnly does nothing.
	setErr      error
	vanishOnSet bool
	sticky      bool
	readErr     error // what ReadOnly returns
	policyErr   error // what SetPolicyValue returns
	policyRead  error // what PolicyValue returns

	calls []string
	polls int // calls of Disks
}

func newFakeWinOS(disks ...winDisk) *fakeWinOS {
	return &fakeWinOS{disks: disks, ro: map[string]bool{}, policy: map[string]uint32{}}
}

func (f *fakeWinOS) call(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeWinOS) present(path string) bool {
	return slices.ContainsFunc(f.disks, func(d winDisk) bool { return d.Path == path })
}

func (f *fakeWinOS) Disks(ctx context.Context) ([]winDisk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.Clone(f.disks), f.disksErr
}

// waitPolls waits until Disks has been called n more times: then Watch has
// reported what it found at least n-1 times.
func (f *fakeWinOS) waitPolls(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	want := f.polls + n
	f.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		f.mu.Lock()
		got := f.polls
		f.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch polled %d times in 5 s, want %d", got-want+n, n)
		}
	}
}

func (f *fakeWinOS) ReadOnly(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ReadOnly %s", path)
	if f.readErr != nil {
		return false, f.readErr
	}
	if !f.present(path) {
		return false, fmt.Errorf("open %s: %w", path, ErrVanished)
	}
	return f.ro[path], nil
}

func (f *fakeWinOS) SetReadOnly(path string, ro bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("SetReadOnly %s %v", path, ro)
	if !f.present(path) {
		return fmt.Errorf("open %s: %w", path, ErrVanished)
	}
	if f.setErr != nil {
		return f.setErr
	}
	if f.vanishOnSet {
		f.disks = slices.DeleteFunc(f.disks, func(d winDisk) bool { return d.Path == path })
		return fmt.Errorf("IOCTL_DISK_SET_DISK_ATTRIBUTES: %w", ErrVanished)
	}
	if !f.sticky {
		f.ro[path] = ro
	}
	return nil
}

func (f *fakeWinOS) PolicyValue(class string) (uint32, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.policyRead != nil {
		return 0, false, f.policyRead
	}
	v, ok := f.policy[class]
	return v, ok, nil
}

func (f *fakeWinOS) SetPolicyValue(class string, v uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("SetPolicyValue %s %d", class, v)
	if f.policyErr != nil {
		return f.policyErr
	}
	f.policy[class] = v
	return nil
}

func (f *fakeWinOS) setDisks(disks ...winDisk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disks = disks
}

func (f *fakeWinOS) setRO(path string, ro bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ro[path] = ro
}

// winPolicyInPlace returns the policy values that say Deny_Write=1 for every
// class.
func winPolicyInPlace() map[string]uint32 {
	m := map[string]uint32{}
	for _, c := range winPolicyClasses {
		m[c.GUID] = 1
	}
	return m
}

func TestWindowsScan(t *testing.T) {
	sys := newFakeWinOS(winSATADisk, winUSBStick, winVHD, winSDCard, winFirewireDisk)
	p := newWindowsPlatform(sys, nil)
	devs, err := p.Scan(t.Context())
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	var names []string
	for _, d := range devs {
		names = append(names, d.Name+" "+string(d.Bus)+" "+d.ID())
	}
	want := []string{"PhysicalDrive1 mmc ::", "PhysicalDrive2 usb 0781:5567:4C530001230809116354", "PhysicalDrive3 firewire ::"}
	if !slices.Equal(names, want) {
		t.Errorf("Scan = %q, want %q", names, want)
	}

	// A disk that could not be read: the others are still reported.
	sys.disksErr = errors.New(`\\?\scsi#x: IOCTL_STORAGE_QUERY_PROPERTY: Incorrect function.`)
	devs, err = p.Scan(t.Context())
	if err == nil || len(devs) != 3 {
		t.Errorf("Scan with a failing disk = %d devices, %v; want 3 and an error", len(devs), err)
	}

	d, ok, err := p.Lookup(t.Context(), "PhysicalDrive2")
	if err != nil || !ok || d.Serial != "4C530001230809116354" {
		t.Errorf("Lookup(PhysicalDrive2) = %+v, %v, %v", d, ok, err)
	}
	sys.disksErr = nil
	if _, ok, err := p.Lookup(t.Context(), "PhysicalDrive0"); err != nil || ok {
		t.Errorf("Lookup(PhysicalDrive0), a fixed disk = %v, %v; want false, nil", ok, err)
	}
	if _, _, err := p.Lookup(t.Context(), "PhysicalDrive9"); !errors.Is(err, ErrVanished) {
		t.Errorf("Lookup(PhysicalDrive9) = %v, want ErrVanished", err)
	}
}

func TestWindowsProtect(t *testing.T) {
	stick, _ := classifyWinDisk(winUSBStick)
	byName := stick
	byName.SysPath = ""
	setRO := fmt.Sprintf("SetReadOnly %s true", winUSBStick.Path)
	read := "ReadOnly " + winUSBStick.Path
	tests := []struct {
		name      string
		dev       Device
		setup     func(*fakeWinOS)
		wantState State
		repaired  bool
		wantErr   error // matched with errors.Is; nil: no error
		anyErr    bool  // an error, whatever it is
		wantCalls []string
		actionErr bool // the read-only action failed
		roAfter   bool
	}{
		{name: "writable stick", dev: stick,
			wantState: StateReadOnly, repaired: true, roAfter: true,
			wantCalls: []string{read, setRO, read}},
		{name: "already read-only", dev: stick, setup: func(f *fakeWinOS) { f.ro[winUSBStick.Path] = true },
			wantState: StateReadOnly, roAfter: true, wantCalls: []string{read}},
		{name: "found by name without a path", dev: byName,
			wantState: StateReadOnly, repaired: true, roAfter: true, wantCalls: []string{read, setRO, read}},
		{name: "SetReadOnly fails", dev: stick, setup: func(f *fakeWinOS) { f.setErr = errors.New("Access is denied.") },
			wantState: StateWritable, anyErr: true, actionErr: true, wantCalls: []string{read, setRO}},
		{name: "attribute does not stick", dev: stick, setup: func(f *fakeWinOS) { f.sticky = true },
			wantState: StateWritable, anyErr: true, actionErr: true, wantCalls: []string{read, setRO, read}},
		{name: "attributes unreadable", dev: stick, setup: func(f *fakeWinOS) { f.readErr = errors.New("Incorrect function.") },
			wantState: StateWritable, anyErr: true, wantCalls: []string{read}},
		{name: "vanished before", dev: stick, setup: func(f *fakeWinOS) { f.disks = nil },
			wantState: StateWritable, wantErr: ErrVanished, wantCalls: []string{read}},
		{name: "vanished by name", dev: byName, setup: func(f *fakeWinOS) { f.disks = nil },
			wantState: StateWritable, wantErr: ErrVanished},
		{name: "vanished while set", dev: stick, setup: func(f *fakeWinOS) { f.vanishOnSet = true },
			wantState: StateWritable, wantErr: ErrVanished, actionErr: true, wantCalls: []string{read, setRO}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakeWinOS(winSATADisk, winUSBStick)
			sys.policy = winPolicyInPlace()
			if tt.setup != nil {
				tt.setup(sys)
			}
			p := newWindowsPlatform(sys, nil)
			res, err := p.Protect(t.Context(), tt.dev)
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && tt.anyErr != (err != nil):
				t.Errorf("error %v, want one: %v", err, tt.anyErr)
			}
			if res.State != tt.wantState || res.Repaired != tt.repaired {
				t.Errorf("state %s, repaired %v; want %s, %v", res.State, res.Repaired, tt.wantState, tt.repaired)
			}
			if res.Device.Name != tt.dev.Name {
				t.Errorf("result for %q, want %q", res.Device.Name, tt.dev.Name)
			}
			if !slices.Equal(sys.calls, tt.wantCalls) {
				t.Errorf("calls %q, want %q", sys.calls, tt.wantCalls)
			}
			wantActions := 0
			if tt.repaired || tt.actionErr {
				wantActions = 1
			}
			if len(res.Actions) != wantActions {
				t.Fatalf("actions %+v, want %d", res.Actions, wantActions)
			}
			if wantActions == 1 {
				a := res.Actions[0]
				if a.Target != "PhysicalDrive2" || !strings.Contains(a.What, "read-only") || (a.Err != nil) != tt.actionErr {
					t.Errorf("action %+v", a)
				}
			}
			if sys.ro[winUSBStick.Path] != tt.roAfter {
				t.Errorf("read-only afterwards: %v, want %v", sys.ro[winUSBStick.Path], tt.roAfter)
			}
		})
	}

	t.Run("drift", func(t *testing.T) {
		sys := newFakeWinOS(winUSBStick)
		sys.policy = winPolicyInPlace()
		p := newWindowsPlatform(sys, nil)
		if _, err := p.Protect(t.Context(), stick); err != nil {
			t.Fatal(err)
		}
		if res, err := p.Protect(t.Context(), stick); err != nil || res.Repaired || len(res.Actions) != 0 || res.State != StateReadOnly {
			t.Fatalf("second Protect = %+v, %v; want read-only, nothing done", res, err)
		}
		sys.setRO(winUSBStick.Path, false) // diskpart: attributes disk clear readonly
		res, err := p.Protect(t.Context(), stick)
		if err != nil || !res.Repaired || res.State != StateReadOnly || len(res.Actions) != 1 || !sys.ro[winUSBStick.Path] {
			t.Errorf("Protect after drift = %+v, %v; want repaired", res, err)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		sys := newFakeWinOS(winUSBStick)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		res, err := newWindowsPlatform(sys, nil).Protect(ctx, stick)
		if !errors.Is(err, context.Canceled) || res.State != StateWritable || len(sys.calls) != 0 {
			t.Errorf("Protect with a canceled context = %+v, %v, calls %q", res, err, sys.calls)
		}
	})
}

func TestWindowsRelease(t *testing.T) {
	stick, _ := classifyWinDisk(winUSBStick)
	path := winUSBStick.Path
	t.Run("read-only stick", func(t *testing.T) {
		sys := newFakeWinOS(winSATADisk, winUSBStick)
		sys.ro[path] = true
		p := newWindowsPlatform(sys, nil)
		res, err := p.Release(t.Context(), stick)
		if err != nil || res.State != StateExempted || !res.Repaired || len(res.Actions) != 1 || sys.ro[path] {
			t.Fatalf("Release = %+v, %v; read-only afterwards %v", res, err, sys.ro[path])
		}
		want := []string{"ReadOnly " + path, "SetReadOnly " + path + " false", "ReadOnly " + path}
		if !slices.Equal(sys.calls, want) {
			t.Errorf("calls %q, want %q", sys.calls, want)
		}
		// Idempotent.
		res, err = p.Release(t.Context(), stick)
		if err != nil || res.State != StateExempted || res.Repaired || len(res.Actions) != 0 {
			t.Errorf("second Release = %+v, %v; want nothing done", res, err)
		}
		// The end: the attribute again, at once.
		res, err = p.ProtectGently(t.Context(), stick)
		if err != nil || res.State != StateReadOnly || !sys.ro[path] {
			t.Errorf("ProtectGently = %+v, %v", res, err)
		}
	})
	t.Run("attribute does not clear", func(t *testing.T) {
		sys := newFakeWinOS(winUSBStick)
		sys.ro[path] = true
		sys.sticky = true
		res, err := newWindowsPlatform(sys, nil).Release(t.Context(), stick)
		if err == nil || res.State != StateReadOnly {
			t.Errorf("Release = %q, %v; want an error and read-only", res.State, err)
		}
	})
	t.Run("SetReadOnly fails", func(t *testing.T) {
		sys := newFakeWinOS(winUSBStick)
		sys.ro[path] = true
		sys.setErr = errors.New("Access is denied.")
		res, err := newWindowsPlatform(sys, nil).Release(t.Context(), stick)
		if err == nil || res.State != StateReadOnly || len(res.Actions) != 1 || res.Actions[0].Err == nil {
			t.Errorf("Release = %+v, %v", res, err)
		}
	})
	t.Run("vanished", func(t *testing.T) {
		sys := newFakeWinOS()
		byName := stick
		byName.SysPath = ""
		if _, err := newWindowsPlatform(sys, nil).Release(t.Context(), byName); !errors.Is(err, ErrVanished) {
			t.Errorf("Release of a missing disk: %v, want ErrVanished", err)
		}
	})
}

func TestWindowsPolicy(t *testing.T) {
	cdrom, wpd := winPolicyClasses[0].GUID, winPolicyClasses[1].GUID
	tests := []struct {
		name        string
		setup       func(*fakeWinOS)
		wantActions []string // What of each action, in order
		wantErr     bool
	}{
		{name: "absent", wantActions: []string{
			"set CD and DVD policy Deny_Write=1 (was absent)",
			"set WPD policy Deny_Write=1 (was absent)",
			"set WPD policy Deny_Write=1 (was absent)",
			"set floppy policy Deny_Write=1 (was absent)",
			"set tape policy Deny_Write=1 (was absent)",
		}},
		{name: "in place", setup: func(f *fakeWinOS) { f.policy = winPolicyInPlace() }},
		{name: "drift", setup: func(f *fakeWinOS) {
			f.policy = winPolicyInPlace()
			f.policy[cdrom] = 0
			delete(f.policy, wpd)
		}, wantActions: []string{"set CD and DVD policy Deny_Write=1 (was 0)", "set WPD policy Deny_Write=1 (was absent)"}},
		{name: "write fails", setup: func(f *fakeWinOS) {
			f.policy = winPolicyInPlace()
			f.policy[cdrom] = 0
			f.policyErr = errors.New("Access is denied.")
		}, wantActions: []string{"set CD and DVD policy Deny_Write=1 (was 0)"}, wantErr: true},
		{name: "read fails", setup: func(f *fakeWinOS) {
			f.policyRead = errors.New("Access is denied.")
		}, wantActions: slices.Repeat([]string{""}, len(winPolicyClasses)), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakeWinOS()
			if tt.setup != nil {
				tt.setup(sys)
			}
			p := newWindowsPlatform(sys, nil)
			acts, err := p.EnsurePolicy(t.Context())
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want one: %v", err, tt.wantErr)
			}
			if len(acts) != len(tt.wantActions) {
				t.Fatalf("actions %+v, want %q", acts, tt.wantActions)
			}
			for i, a := range acts {
				if tt.wantActions[i] != "" && a.What != tt.wantActions[i] {
					t.Errorf("action %d: %q, want %q", i, a.What, tt.wantActions[i])
				}
				if (a.Err != nil) != tt.wantErr {
					t.Errorf("action %d: error %v, want one: %v", i, a.Err, tt.wantErr)
				}
			}
			if !tt.wantErr && !maps.Equal(sys.policy, winPolicyInPlace()) {
				t.Errorf("policy afterwards %v, want Deny_Write=1 for every class", sys.policy)
			}
			// Nothing but the classes' Deny_Write is ever written.
			for _, c := range sys.calls {
				class := strings.Fields(c)[1]
				if !slices.ContainsFunc(winPolicyClasses, func(p struct{ Name, GUID string }) bool { return p.GUID == class }) {
					t.Errorf("wrote %s", c)
				}
			}
		})
	}

	t.Run("through Protect", func(t *testing.T) {
		sys := newFakeWinOS(winUSBStick)
		sys.ro[winUSBStick.Path] = true
		sys.policy = winPolicyInPlace()
		sys.policy[cdrom] = 0
		stick, _ := classifyWinDisk(winUSBStick)
		p := newWindowsPlatform(sys, nil)
		res, err := p.Protect(t.Context(), stick)
		if err != nil || res.State != StateReadOnly || res.Repaired || len(res.Actions) != 1 || res.Actions[0].Target != cdrom {
			t.Errorf("Protect with the CD/DVD policy drifted = %+v, %v", res, err)
		}
		if res, _ := p.Protect(t.Context(), stick); len(res.Actions) != 0 {
			t.Errorf("second Protect: actions %+v, want none", res.Actions)
		}
		// A policy that cannot be written does not make the disk fail.
		sys.policy[cdrom] = 0
		sys.policyErr = errors.New("Access is denied.")
		res, err = p.Protect(t.Context(), stick)
		if err != nil || res.State != StateReadOnly || len(res.Actions) != 1 || res.Actions[0].Err == nil {
			t.Errorf("Protect with the policy unwritable = %+v, %v; want read-only and a failed action", res, err)
		}
	})
}

func TestWindowsWatch(t *testing.T) {
	sys := newFakeWinOS(winSATADisk, winUSBStick)
	sys.ro[winUSBStick.Path] = true
	p := newWindowsPlatform(sys, nil)
	p.PollInterval = 5 * time.Millisecond
	notes := make(chan Notification, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, func(n Notification) { notes <- n }) }()

	next := func(want string) {
		t.Helper()
		select {
		case n := <-notes:
			got := n.Action + " " + n.Subsystem + " " + n.DevType + " " + n.DevName
			if got != want || n.DevPath == "" || n.Received.IsZero() {
				t.Fatalf("notification %+v, want %q", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no notification, want %q", want)
		}
	}
	quiet := func() {
		t.Helper()
		sys.waitPolls(t, 2)
		select {
		case n := <-notes:
			t.Fatalf("unexpected notification %+v", n)
		default:
		}
	}

	quiet() // disks present at start are Scan's
	sys.setDisks(winSATADisk, winUSBStick, winSDCard)
	next("add block disk PhysicalDrive1")
	sys.setRO(winSDCard.Path, true)
	quiet()
	sys.setRO(winUSBStick.Path, false) // drift
	next("change block disk PhysicalDrive2")
	quiet()

	// A failing listing with a disk missing reports no removal.
	sys.mu.Lock()
	sys.disks, sys.disksErr = []winDisk{winSATADisk, winSDCard}, errors.New("one disk unreadable")
	sys.mu.Unlock()
	quiet()
	sys.mu.Lock()
	sys.disksErr = nil
	sys.mu.Unlock()
	next("remove block disk PhysicalDrive2")

	// Another stick gets the number of one pulled: the removal comes first.
	other := winNoSerialStick
	other.Number = 1
	sys.setDisks(winSATADisk, other)
	next("remove block disk PhysicalDrive1")
	next("add block disk PhysicalDrive1")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not end with its context")
	}
}

func TestWindowsWatchFirstPollFails(t *testing.T) {
	sys := newFakeWinOS(winUSBStick)
	sys.disksErr = errors.New("SetupDiGetClassDevsEx: Access is denied.")
	p := newWindowsPlatform(sys, nil)
	p.PollInterval = 5 * time.Millisecond
	notes := make(chan Notification, 16)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go p.Watch(ctx, func(n Notification) { notes <- n })
	sys.waitPolls(t, 2)
	sys.mu.Lock()
	sys.disksErr = nil // the first good poll is the baseline
	sys.mu.Unlock()
	sys.waitPolls(t, 2)
	sys.setDisks(winUSBStick, winSDCard)
	select {
	case n := <-notes:
		if n.Action != "add" || n.DevName != "PhysicalDrive1" {
			t.Errorf("notification %+v, want add PhysicalDrive1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
}
