package netcheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The trees under testdata/sysfs reproduce the sysfs layouts of real
// network devices; testdata/sysfs/README.md says which.

// absTree returns the absolute path of a testdata tree (USBDevice is
// built from the root as given, and setAuthorized wants it absolute).
func absTree(t testing.TB, tree string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "sysfs", tree))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// copyTree copies a testdata tree, symlinks as symlinks, into a temporary
// directory for tests that break or write it.
func copyTree(t testing.TB, tree string) string {
	t.Helper()
	src := filepath.Join("testdata", "sysfs", tree)
	dst := filepath.Join(t.TempDir(), tree)
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case e.IsDir():
			return os.MkdirAll(to, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o644)
		}
	})
	if err != nil {
		t.Fatalf("copy %s: %v", tree, err)
	}
	return dst
}

const xhci = "devices/pci0000:00/0000:00:14.0/usb1/"

// treeCases: every interface of every tree, and its classification. The
// netlink link type is "device" for every one (what the kernel says of a
// real NIC, and of any interface without a rtnl link kind), so the kind
// comes from sysfs alone.
var treeCases = map[string]map[string]netClass{
	"phone-rndis": {
		"lo":        {Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"},
		"enp0s31f6": {Kind: KindEthernet, Reason: "pci device 0000:00:1f.6", Driver: "e1000e"},
		"usb0": {Kind: KindUSB, Reason: "usb ancestor 1-2, interface 1-2:1.0 class e0/01/03 (RNDIS)",
			Driver: "rndis_host", VendorID: "18d1", ProductID: "4ee3", USBDevice: xhci + "1-2"},
	},
	"usb-ethernet": {
		"lo":        {Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"},
		"enp0s31f6": {Kind: KindEthernet, Reason: "pci device 0000:00:1f.6", Driver: "e1000e"},
		"enx00e04c680001": {Kind: KindUSB, Reason: "usb ancestor 1-3, interface 1-3:2.0 class 02/0d/00 (CDC-NCM)",
			Driver: "cdc_ncm", VendorID: "0bda", ProductID: "8156", USBDevice: xhci + "1-3"},
		"enx000ec6000002": {Kind: KindUSB, Reason: "usb ancestor 1-4, interface 1-4:1.0 class ff/ff/00 (vendor-specific, driver ax88179_178a)",
			Driver: "ax88179_178a", VendorID: "0b95", ProductID: "1790", USBDevice: xhci + "1-4"},
	},
	"usb-wifi": {
		"lo":        {Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"},
		"enp0s31f6": {Kind: KindEthernet, Reason: "pci device 0000:00:1f.6", Driver: "e1000e"},
		"wlx00c0ca000003": {Kind: KindWireless, Reason: "sysfs phy80211/, usb ancestor 1-1",
			Driver: "mt7601u", VendorID: "148f", ProductID: "7601", USBDevice: xhci + "1-1"},
	},
	"laptop": {
		"lo":          {Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"},
		"enp0s31f6":   {Kind: KindEthernet, Reason: "pci device 0000:00:1f.6", Driver: "e1000e"},
		"wlp0s20f3":   {Kind: KindWireless, Reason: "sysfs phy80211/", Driver: "iwlwifi"},
		"docker0":     {Kind: KindVirtual, Reason: "sysfs devices/virtual, DEVTYPE=bridge"},
		"veth1a2b3c4": {Kind: KindVirtual, Reason: "sysfs devices/virtual"},
		"dummy0":      {Kind: KindVirtual, Reason: "sysfs devices/virtual"},
		"wg0":         {Kind: KindVirtual, Reason: "sysfs devices/virtual, DEVTYPE=wireguard"},
		"tun0":        {Kind: KindVirtual, Reason: "sysfs devices/virtual"},
	},
	"bluetooth-pan": {
		"lo":        {Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"},
		"enp0s31f6": {Kind: KindEthernet, Reason: "pci device 0000:00:1f.6", Driver: "e1000e"},
		"bnep0": {Kind: KindBluetooth, Reason: "uevent DEVTYPE=bluetooth, bluetooth ancestor hci0:3, usb ancestor 1-14",
			VendorID: "8087", ProductID: "0026", USBDevice: xhci + "1-14"},
	},
}

func TestClassifyTrees(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "sysfs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && treeCases[e.Name()] == nil {
			t.Errorf("tree %s has no test case", e.Name())
		}
	}
	for tree, want := range treeCases {
		t.Run(tree, func(t *testing.T) {
			root := absTree(t, tree)
			ifs, err := os.ReadDir(filepath.Join(root, "class", "net"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, i := range ifs {
				names = append(names, i.Name())
			}
			for name := range want {
				if !slices.Contains(names, name) {
					t.Errorf("class/net/%s missing from the tree", name)
				}
			}
			for _, name := range names {
				w, ok := want[name]
				if !ok {
					t.Errorf("%s: no expectation", name)
					continue
				}
				if w.USBDevice != "" {
					w.USBDevice = filepath.Join(root, w.USBDevice)
				}
				got := classifyNet(root, netLink{Name: name, LinkType: "device"})
				if got != w {
					t.Errorf("%s:\n got %+v\nwant %+v", name, got, w)
				}
			}
		})
	}
}

// TestClassifyBroken: trees that lack what classification reads, and
// netlink facts that disagree with sysfs. Nothing is dropped, nothing
// panics, and what cannot be decided is unknown with the reason.
func TestClassifyBroken(t *testing.T) {
	usb0 := xhci + "1-2/1-2:1.0/net/usb0"
	cases := []struct {
		name   string
		tree   string
		breaks func(t *testing.T, root string)
		link   netLink
		kind   string
		reason string // substring
	}{
		{name: "loopback flag wins", tree: "phone-rndis", link: netLink{Name: "usb0", Loopback: true}, kind: KindLoopback, reason: "IFF_LOOPBACK"},
		{name: "bad name", tree: "phone-rndis", link: netLink{Name: "../usb0"}, kind: KindUnknown, reason: "not a kernel interface name"},
		{name: "real device not in sysfs", tree: "phone-rndis", link: netLink{Name: "eth9", LinkType: "device"}, kind: KindUnknown, reason: "not in sysfs class/net, netlink link type device"},
		{name: "veth not in sysfs", tree: "phone-rndis", link: netLink{Name: "veth9", LinkType: "veth"}, kind: KindVirtual, reason: "netlink link type veth, not in sysfs"},
		{name: "no link type not in sysfs", tree: "phone-rndis", link: netLink{Name: "x0"}, kind: KindUnknown, reason: "netlink link type none"},
		{name: "sysfs root missing", tree: "phone-rndis", breaks: func(t *testing.T, root string) { os.RemoveAll(root) },
			link: netLink{Name: "usb0", LinkType: "device"}, kind: KindUnknown, reason: "sysfs root unreadable"},
		{name: "another namespace's interface of the same name", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { write(t, root, usb0+"/ifindex", "5\n") },
			link:   netLink{Name: "usb0", Index: 7, LinkType: "dummy"}, kind: KindVirtual, reason: "sysfs class/net/usb0 is another interface (ifindex \"5\", netlink 7)"},
		{name: "same ifindex", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { write(t, root, usb0+"/ifindex", "5\n") },
			link:   netLink{Name: "usb0", Index: 5, LinkType: "device"}, kind: KindUSB, reason: "(RNDIS)"},
		{name: "device directory vanished", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { rm(t, root, xhci+"1-2") },
			link:   netLink{Name: "usb0", LinkType: "device"}, kind: KindUnknown, reason: "not in sysfs class/net"},
		{name: "usb interface without a usb device", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { rm(t, root, xhci+"1-2/idVendor") },
			link:   netLink{Name: "usb0", LinkType: "device"}, kind: KindUnknown, reason: "usb interface 1-2:1.0 without a usb device above it"},
		{name: "interface class missing", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { rm(t, root, xhci+"1-2/1-2:1.0/bInterfaceClass") },
			link:   netLink{Name: "usb0", LinkType: "device"}, kind: KindUSB, reason: "usb ancestor 1-2 (interface 1-2:1.0 bInterfaceClass missing; no network interface class found)"},
		{name: "interface class not hex", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { write(t, root, xhci+"1-2/1-2:1.0/bInterfaceClass", "zz\n") },
			link:   netLink{Name: "usb0", LinkType: "device"}, kind: KindUSB, reason: "bInterfaceClass not hex: \"zz\""},
		{name: "idVendor odd", tree: "phone-rndis",
			breaks: func(t *testing.T, root string) { write(t, root, xhci+"1-2/idVendor", "18d1x\n") },
			link:   netLink{Name: "usb0", LinkType: "device"}, kind: KindUSB, reason: "idVendor not 4 hex digits"},
		{name: "no device behind a non-virtual interface", tree: "laptop",
			breaks: func(t *testing.T, root string) { rm(t, root, "devices/pci0000:00/0000:00:1f.6/net/enp0s31f6/device") },
			link:   netLink{Name: "enp0s31f6", LinkType: "device"}, kind: KindUnknown, reason: "no device behind it"},
		{name: "class link out of the tree", tree: "laptop",
			breaks: func(t *testing.T, root string) {
				rm(t, root, "class/net/dummy0")
				if err := os.Symlink("/", filepath.Join(root, "class/net/dummy0")); err != nil {
					t.Fatal(err)
				}
			},
			link: netLink{Name: "dummy0", LinkType: "dummy"}, kind: KindUnknown, reason: "resolves outside devices/"},
		{name: "wireless by DEVTYPE alone", tree: "usb-wifi",
			breaks: func(t *testing.T, root string) { rm(t, root, xhci+"1-1/1-1:1.0/net/wlx00c0ca000003/phy80211") },
			link:   netLink{Name: "wlx00c0ca000003", LinkType: "device"}, kind: KindWireless, reason: "uevent DEVTYPE=wlan, usb ancestor 1-1"},
		{name: "bnep0 without a parent device (a kernel that drops SET_NETDEV_DEV)", tree: "bluetooth-pan",
			breaks: func(t *testing.T, root string) { virtualBnep(t, root, "DEVTYPE=bluetooth\nINTERFACE=bnep0\n") },
			link:   netLink{Name: "bnep0", LinkType: "device"}, kind: KindBluetooth, reason: "uevent DEVTYPE=bluetooth"},
		{name: "bnep0 virtual, no DEVTYPE", tree: "bluetooth-pan",
			breaks: func(t *testing.T, root string) { virtualBnep(t, root, "INTERFACE=bnep0\n") },
			link:   netLink{Name: "bnep0", LinkType: "device"}, kind: KindBluetooth, reason: "bnep interface"},
		{name: "attribute too long", tree: "laptop",
			breaks: func(t *testing.T, root string) {
				write(t, root, "devices/virtual/net/docker0/uevent", strings.Repeat("x", maxAttr+1))
			},
			link: netLink{Name: "docker0", LinkType: "bridge"}, kind: KindVirtual, reason: "uevent unreadable: longer than 4096 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := copyTree(t, c.tree)
			if c.breaks != nil {
				c.breaks(t, root)
			}
			got := classifyNet(root, c.link)
			if got.Kind != c.kind || !strings.Contains(got.Reason, c.reason) {
				t.Errorf("got %s %q, want %s with %q", got.Kind, got.Reason, c.kind, c.reason)
			}
		})
	}
}

// virtualBnep moves bnep0 to devices/virtual/net with the given uevent.
func virtualBnep(t *testing.T, root, uevent string) {
	t.Helper()
	rm(t, root, "class/net/bnep0")
	if err := os.MkdirAll(filepath.Join(root, "devices/virtual/net/bnep0"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, root, "devices/virtual/net/bnep0/uevent", uevent)
	if err := os.Symlink("../../devices/virtual/net/bnep0", filepath.Join(root, "class/net/bnep0")); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, root, rel, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, rel), []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rm(t *testing.T, root, rel string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(root, rel)); err != nil {
		t.Fatal(err)
	}
}

func TestSetAuthorized(t *testing.T) {
	root := copyTree(t, "phone-rndis")
	dev := filepath.Join(root, xhci+"1-2")
	auth := func() string {
		b, err := os.ReadFile(filepath.Join(dev, "authorized"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if err := setAuthorized(root, dev, "0"); err != nil {
		t.Fatal(err)
	}
	if got := auth(); got != "0" {
		t.Fatalf("authorized = %q after cut, want 0", got)
	}
	if err := setAuthorized(root, dev, "1"); err != nil {
		t.Fatal(err)
	}
	if got := auth(); got != "1" {
		t.Fatalf("authorized = %q after restore, want 1", got)
	}

	bad := []struct {
		name, dir, want string
		prep            func()
	}{
		{name: "empty", dir: "", want: "no usb device directory"},
		{name: "relative", dir: xhci + "1-2", want: "not an absolute path"},
		{name: "outside the root", dir: filepath.Join(root, "..", "x"), want: "is not under"},
		{name: "escapes with dot-dot", dir: root + "/devices/../../etc", want: "is not under"},
		{name: "an interface", dir: filepath.Join(dev, "1-2:1.0"), want: "is a usb interface"},
		{name: "not a usb device", dir: filepath.Join(root, "devices/pci0000:00/0000:00:1f.6"), want: "not a usb device (no idVendor)"},
		{name: "gone", dir: filepath.Join(root, xhci+"1-9"), want: "is gone"},
		{name: "no authorized attribute", dir: dev, want: "open authorized", prep: func() { rm(t, root, xhci+"1-2/authorized") }},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if c.prep != nil {
				c.prep()
			}
			err := setAuthorized(root, c.dir, "0")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dev, "authorized")); err == nil {
		t.Error("a missing authorized attribute was created")
	}
}

func TestUSBNetClass(t *testing.T) {
	cases := []struct {
		c, s, p uint8
		want    string
	}{
		{0xe0, 0x01, 0x03, "RNDIS"}, {0xef, 0x04, 0x01, "RNDIS"}, {0x02, 0x02, 0xff, "RNDIS"},
		{0x02, 0x06, 0x00, "CDC-ECM"}, {0x02, 0x0d, 0x00, "CDC-NCM"}, {0x02, 0x0c, 0x07, "CDC-EEM"},
		{0x02, 0x0e, 0x00, "CDC-MBIM"}, {0xff, 0xff, 0x00, "vendor-specific"},
		{0xe0, 0x01, 0x01, ""}, {0x08, 0x06, 0x50, ""}, {0x02, 0x02, 0x01, ""},
	}
	for _, c := range cases {
		if got := usbNetClass(c.c, c.s, c.p); got != c.want {
			t.Errorf("%02x/%02x/%02x: %q, want %q", c.c, c.s, c.p, got, c.want)
		}
	}
}

// FuzzClassifyAttrs writes fuzzed attribute values into the phone's tree
// and classifies usb0: never a panic, always a kind, and the phone stays
// a usb adapter whatever its attributes say, unless the uevent claims a
// wireless or bluetooth device type.
func FuzzClassifyAttrs(f *testing.F) {
	f.Add("e0\n", "18d1\n", "DEVTYPE=gadget\nINTERFACE=usb0\n", "1\n")
	f.Add("zz", "", "", "772")
	f.Add("ff\n", "\x00\x01", "DEVTYPE=wlan", "")
	root := copyTree(f, "phone-rndis")
	f.Fuzz(func(t *testing.T, class, vendor, uevent, typ string) {
		for rel, v := range map[string]string{
			xhci + "1-2/1-2:1.0/bInterfaceClass": class,
			xhci + "1-2/idVendor":                vendor,
			xhci + "1-2/1-2:1.0/net/usb0/uevent": uevent,
			xhci + "1-2/1-2:1.0/net/usb0/type":   typ,
		} {
			if err := os.WriteFile(filepath.Join(root, rel), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got := classifyNet(root, netLink{Name: "usb0", LinkType: "device"})
		switch got.Kind {
		case KindUSB, KindWireless, KindBluetooth:
		case KindLoopback:
			if strings.TrimSpace(typ) != arphrdLoopback {
				t.Fatalf("loopback without type 772: %+v", got)
			}
		default:
			t.Fatalf("usb0 classified %+v", got)
		}
		if got.Kind != KindUSB && got.Kind != KindLoopback {
			dt := ueventValue(strings.TrimSpace(uevent), "DEVTYPE")
			if dt != "wlan" && dt != "bluetooth" {
				t.Fatalf("usb0 classified %+v with DEVTYPE %q", got, dt)
			}
		}
		if got.Reason == "" {
			t.Fatal("no reason")
		}
	})
}
