//go:build linux

package media

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHoldsSystem: a device whose node has the device number of the root
// filesystem is recognised as the system disk (and so never made
// read-only); any other is not. The node is made in a temporary directory;
// nothing is done to the real disk.
func TestHoldsSystem(t *testing.T) {
	testenv.RequireRoot(t, "mknod")
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		t.Fatal(err)
	}
	dev := t.TempDir()
	if err := unix.Mknod(filepath.Join(dev, "fakep1"), unix.S_IFBLK|0o600, int(root.Dev)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dev, "other"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatal(err)
	}
	mp, ok := holdsSystem(dev, Device{Name: "fake", Partitions: []string{"fakep1"}})
	if !ok || mp != "/" {
		t.Fatalf("holdsSystem = %q, %v; want the root filesystem recognised", mp, ok)
	}
	if err := errSystemDisk(Device{Name: "fake"}, mp); !strings.Contains(err.Error(), "left writable") {
		t.Errorf("error = %v", err)
	}
	if mp, ok := holdsSystem(dev, Device{Name: "other"}); ok {
		t.Errorf("an unrelated device holds %s", mp)
	}
}

func TestParseBlockStatWrites(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		// Linux 5.5+: 17 fields.
		{in: "     151        0     8450       37       42        3     1024       11        0      132       49        0        0        0        0        7        1\n", want: 42, ok: true},
		// Older kernels: 11 fields.
		{in: "1 2 3 4 5 6 7 8 9 10 11", want: 5, ok: true},
		{in: "1 2 3 4", ok: false},
		{in: "1 2 3 4 x", ok: false},
		{in: "", ok: false},
	}
	for _, tt := range tests {
		got, err := parseBlockStatWrites(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseBlockStatWrites(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseBlockStatWrites(f *testing.F) {
	f.Add("151 0 8450 37 42 3 1024 11 0 132 49 0 0 0 0 7 1\n")
	f.Add("1 2 3 4")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBlockStatWrites(s)
		if err != nil {
			return
		}
		// The fifth field, whatever else is there.
		if v, err := strconv.ParseUint(strings.Fields(s)[4], 10, 64); err != nil || v != n {
			t.Errorf("parseBlockStatWrites(%q) = %d", s, n)
		}
	})
}

// TestReleaseRefused: what the Linux platform cannot make writable it
// refuses, leaving the device as it is.
func TestReleaseRefused(t *testing.T) {
	p := NewPlatform(Options{SysRoot: t.TempDir(), DevDir: t.TempDir()}).(*linuxPlatform)
	for _, d := range []Device{
		{Name: "1-2", MTP: true, Bus: BusUSB},
		{Name: "sr0", Bus: BusOptical},
	} {
		res, err := p.Release(t.Context(), d)
		if !errors.Is(err, errors.ErrUnsupported) || res.State == StateExempted {
			t.Errorf("Release(%s) = %q, %v; want refused with ErrUnsupported", d.Name, res.State, err)
		}
	}
}
