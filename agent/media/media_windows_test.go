//go:build windows

package media

// These tests call the real Windows APIs. make wine-test runs them under
// Wine (scripts/wine/), which exposes no disks through SetupAPI; on
// Windows they find the machine's disks but change none.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/mnguard/mnguard/internal/testenv"
)

// testPolicyAPI returns a winAPI whose policy key is a fresh key under
// HKCU, deleted when the test ends.
func testPolicyAPI(t *testing.T) winAPI {
	t.Helper()
	base := fmt.Sprintf(`SOFTWARE\mnguard-test\%s-%d-%d`, t.Name(), os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		if err := deleteKeyTree(registry.CURRENT_USER, base); err != nil {
			t.Errorf("clean up HKCU\\%s: %v", base, err)
		}
		registry.DeleteKey(registry.CURRENT_USER, `SOFTWARE\mnguard-test`) // fails while others' keys are there
	})
	return winAPI{policyRoot: registry.CURRENT_USER, policyKey: base + `\RemovableStorageDevices`}
}

func deleteKeyTree(root registry.Key, path string) error {
	k, err := registry.OpenKey(root, path, registry.ENUMERATE_SUB_KEYS)
	if errors.Is(err, registry.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := k.ReadSubKeyNames(-1)
	k.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := deleteKeyTree(root, path+`\`+n); err != nil {
			return err
		}
	}
	return registry.DeleteKey(root, path)
}

func TestWinAPIPolicy(t *testing.T) {
	api := testPolicyAPI(t)
	cdrom := winPolicyClasses[0].GUID
	if v, ok, err := api.PolicyValue(cdrom); err != nil || ok {
		t.Fatalf("PolicyValue without the key = %d, %v, %v; want absent", v, ok, err)
	}
	if err := api.SetPolicyValue(cdrom, 0); err != nil {
		t.Fatalf("SetPolicyValue: %v", err)
	}
	if v, ok, err := api.PolicyValue(cdrom); err != nil || !ok || v != 0 {
		t.Fatalf("PolicyValue = %d, %v, %v; want 0", v, ok, err)
	}

	p := newWindowsPlatform(api, nil)
	acts, err := p.EnsurePolicy(t.Context())
	if err != nil || len(acts) != len(winPolicyClasses) {
		t.Fatalf("EnsurePolicy = %+v, %v; want an action for every class", acts, err)
	}
	if acts[0].What != "set CD and DVD policy Deny_Write=1 (was 0)" || acts[1].What != "set WPD policy Deny_Write=1 (was absent)" {
		t.Errorf("actions %q, %q", acts[0].What, acts[1].What)
	}
	for _, c := range winPolicyClasses {
		k, err := registry.OpenKey(api.policyRoot, api.policyKey+`\`+c.GUID, registry.QUERY_VALUE)
		if err != nil {
			t.Fatalf("%s: %v", c.GUID, err)
		}
		v, typ, err := k.GetIntegerValue("Deny_Write")
		k.Close()
		if err != nil || typ != registry.DWORD || v != 1 {
			t.Errorf("%s\\Deny_Write = %d (type %d), %v; want REG_DWORD 1", c.GUID, v, typ, err)
		}
	}
	if acts, err := p.EnsurePolicy(t.Context()); err != nil || len(acts) != 0 {
		t.Errorf("EnsurePolicy again = %+v, %v; want nothing done", acts, err)
	}

	// Drift: someone set a value to 0, or wrote it as a string.
	wpd := winPolicyClasses[2].GUID
	if err := api.SetPolicyValue(cdrom, 0); err != nil {
		t.Fatal(err)
	}
	k, _, err := registry.CreateKey(api.policyRoot, api.policyKey+`\`+wpd, registry.SET_VALUE)
	if err != nil {
		t.Fatal(err)
	}
	err = k.SetStringValue("Deny_Write", "1")
	k.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := api.PolicyValue(wpd); err != nil || ok {
		t.Errorf("PolicyValue of a REG_SZ = %d, %v, %v; want not a value", v, ok, err)
	}
	acts, err = p.EnsurePolicy(t.Context())
	if err != nil || len(acts) != 2 || acts[0].Target != cdrom || acts[1].Target != wpd {
		t.Errorf("EnsurePolicy after drift = %+v, %v; want the two repaired", acts, err)
	}
	if v, ok, err := api.PolicyValue(wpd); err != nil || !ok || v != 1 {
		t.Errorf("PolicyValue after repair = %d, %v, %v; want 1", v, ok, err)
	}
}

func TestWinAPIDisks(t *testing.T) {
	api := winAPI{}
	disks, err := api.Disks(t.Context())
	if err != nil {
		t.Fatalf("Disks: %v", err)
	}
	t.Logf("%d disks", len(disks))
	for _, d := range disks {
		t.Logf("%s: %+v", winDiskName(d.Number), d)
		if d.Path == "" || d.InstanceID == "" || d.Number < 0 {
			t.Errorf("disk %+v: want a path, an instance ID and a number", d)
		}
		if _, err := api.ReadOnly(d.Path); err != nil {
			t.Errorf("ReadOnly(%s): %v", d.Path, err)
		}
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := api.Disks(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Disks with a canceled context: %v, want context.Canceled", err)
	}

	for _, path := range []string{`\\.\PhysicalDrive99`, `\\?\usbstor#disk&ven_none#0&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}`} {
		if _, err := api.ReadOnly(path); !errors.Is(err, ErrVanished) {
			t.Errorf("ReadOnly(%s) = %v, want ErrVanished", path, err)
		}
		if err := api.SetReadOnly(path, true); !errors.Is(err, ErrVanished) {
			t.Errorf("SetReadOnly(%s) = %v, want ErrVanished", path, err)
		}
	}
}

func TestWindowsPlatformReal(t *testing.T) {
	p, ok := NewPlatform(Options{}).(*windowsPlatform)
	if !ok {
		t.Fatalf("NewPlatform is %T, want *windowsPlatform", p)
	}
	if api, ok := p.sys.(winAPI); !ok || api.policyRoot != registry.LOCAL_MACHINE || !strings.HasSuffix(api.policyKey, `\Windows\RemovableStorageDevices`) {
		t.Errorf("platform over %+v, want the HKLM policy key", p.sys)
	}
	// The real disks, and a test policy key rather than the machine's.
	p = newWindowsPlatform(winAPI{policyRoot: registry.CURRENT_USER, policyKey: testPolicyAPI(t).policyKey}, nil)
	devs, err := p.Scan(t.Context())
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	t.Logf("removable: %+v", devs)
	if _, err := p.Protect(t.Context(), Device{Name: "PhysicalDrive99"}); !errors.Is(err, ErrVanished) {
		t.Errorf("Protect(PhysicalDrive99) = %v, want ErrVanished", err)
	}

	// Watch over the real disks: nothing changes, and it ends with ctx.
	p.PollInterval = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	var notes []Notification
	if err := p.Watch(ctx, func(n Notification) { notes = append(notes, n) }); err != nil {
		t.Errorf("Watch = %v, want nil at the end of its context", err)
	}
	if len(notes) != 0 {
		t.Errorf("Watch reported %+v with no disk attached or removed", notes)
	}
}

// TestWinStatDisk asks the first disk for what Disks reads of each disk.
// Wine answers for \\.\PhysicalDrive0 although SetupAPI lists no disk.
func TestWinStatDisk(t *testing.T) {
	d, err := statDisk(`\\.\PhysicalDrive0`)
	if errors.Is(err, ErrVanished) {
		t.Skipf("no PhysicalDrive0: %v", err)
	}
	if err != nil {
		t.Fatalf("statDisk: %v", err)
	}
	t.Logf("%+v", d)
	if d.Number != 0 {
		t.Errorf("PhysicalDrive0 says it is number %d", d.Number)
	}
}

// TestWinInterfacePath runs the SetupAPI and Configuration Manager calls
// that x/sys/windows lacks on the devices Wine has, its HID keyboard and
// mouse: no disk has an interface there.
func TestWinInterfacePath(t *testing.T) {
	hid, err := windows.GUIDFromString("{4d1e55b2-f16f-11cf-88cb-001111000030}") // GUID_DEVINTERFACE_HID
	if err != nil {
		t.Fatal(err)
	}
	set, err := windows.SetupDiGetClassDevsEx(&hid, "", 0, windows.DIGCF_PRESENT|windows.DIGCF_DEVICEINTERFACE, 0, "")
	if err != nil {
		t.Fatalf("SetupDiGetClassDevsEx: %v", err)
	}
	defer windows.SetupDiDestroyDeviceInfoList(set)
	n := 0
	for i := 0; ; i++ {
		data, err := windows.SetupDiEnumDeviceInfo(set, i)
		if errors.Is(err, windows.ERROR_NO_MORE_ITEMS) {
			break
		}
		if err != nil {
			t.Fatalf("SetupDiEnumDeviceInfo: %v", err)
		}
		inst, err := windows.SetupDiGetDeviceInstanceId(set, data)
		if err != nil {
			t.Fatal(err)
		}
		path, err := interfacePath(set, data, &hid)
		if err != nil {
			t.Errorf("%s: %v", inst, err)
			continue
		}
		anc := ancestors(data.DevInst)
		t.Logf("%s: %s, ancestors %q", inst, path, anc)
		if !strings.HasPrefix(path, `\\?\`) || !strings.Contains(strings.ToLower(path), "{4d1e55b2-f16f-11cf-88cb-001111000030}") {
			t.Errorf("%s: interface path %q", inst, path)
		}
		for _, a := range anc {
			if a == "" || strings.EqualFold(a, inst) || strings.HasPrefix(strings.ToUpper(a), `HTREE\ROOT`) {
				t.Errorf("%s: ancestors %q", inst, anc)
			}
		}
		// The disk interface, which the device does not have.
		if _, err := interfacePath(set, data, &guidDevinterfaceDisk); err == nil {
			t.Errorf("%s: a disk interface", inst)
		}
		n++
	}
	t.Logf("%d HID devices", n)
}

// underWine reports whether the test runs under Wine (its ntdll exports
// wine_get_version).
func underWine() bool {
	return testenv.WineVersion() != ""
}

// TestWinAPIDiskIoctls sends each IOCTL the platform uses to the first
// disk, reading only (it is the system disk on Windows). Under Wine 8 the
// IOCTLs Wine does not implement (IOCTL_DISK_GET_LENGTH_INFO,
// IOCTL_DISK_GET_DISK_ATTRIBUTES) are named in the log; what the platform
// does with the disk attributes is covered by the fake winSys of
// TestWindowsProtect and TestWindowsRelease. On Windows every one must
// answer.
func TestWinAPIDiskIoctls(t *testing.T) {
	const path = `\\.\PhysicalDrive0`
	wine := underWine()
	d, err := statDisk(path) // IOCTL_STORAGE_GET_DEVICE_NUMBER, IOCTL_STORAGE_QUERY_PROPERTY
	if errors.Is(err, ErrVanished) {
		t.Skipf("no %s: %v", path, err)
	}
	if err != nil {
		t.Fatalf("statDisk: %v", err)
	}
	if d.Number != 0 {
		t.Errorf("%s says it is disk %d", path, d.Number)
	}
	lacks := func(ioctl, instead string, err error) {
		t.Helper()
		switch {
		case err == nil:
		case wine && (errors.Is(err, windows.ERROR_INVALID_FUNCTION) || errors.Is(err, windows.ERROR_NOT_SUPPORTED) || errors.Is(err, windows.ERROR_INVALID_PARAMETER)):
			t.Logf("Wine lacks %s (%v): %s", ioctl, err, instead)
		default:
			t.Errorf("%s on %s: %v", ioctl, path, err)
		}
	}
	h, err := openDisk(path, windows.GENERIC_READ)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(h)
	length := make([]byte, 8)
	_, err = ioctl(h, ioctlDiskGetLengthInfo, nil, length)
	lacks("IOCTL_DISK_GET_LENGTH_INFO", "the size is for the report only; statDisk leaves it 0", err)
	ro, err := winAPI{}.ReadOnly(path) // IOCTL_DISK_GET_DISK_ATTRIBUTES
	lacks("IOCTL_DISK_GET_DISK_ATTRIBUTES", "Protect and Release over it run on the fake winSys of TestWindowsProtect and TestWindowsRelease", err)
	if err == nil && ro && !wine {
		t.Errorf("%s, the system disk, says it is read-only", path)
	}
	// IOCTL_DISK_SET_DISK_ATTRIBUTES is not sent to a real disk: it would
	// change it. On a missing disk it must say the disk is gone.
	if err := (winAPI{}).SetReadOnly(`\\.\PhysicalDrive99`, true); !errors.Is(err, ErrVanished) {
		t.Errorf("SetReadOnly(PhysicalDrive99) = %v, want ErrVanished", err)
	}
}
