package netcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mnguard/mnguard/internal/limitread"
)

// This file classifies network interfaces by reading a sysfs tree. It
// only reads files, so it builds on every OS; tests point it at trees
// under testdata/sysfs that reproduce real device layouts. It follows the
// conventions of agent/media's sysfs reader: the device symlink is
// resolved inside the root, ancestors are walked up to devices/, and what
// cannot be read is noted in parentheses at the end of the reason.

// netLink is what the kernel's netlink says about an interface, the input
// of the sysfs classification.
type netLink struct {
	Name     string
	Index    int
	Loopback bool   // IFF_LOOPBACK
	LinkType string // netlink's kind: "device", "veth", "dummy", "bridge", "tuntap", "wireguard", ...
}

// netClass is the classification of one interface.
type netClass struct {
	Kind, Reason                string
	Driver, VendorID, ProductID string
	USBDevice                   string
}

// virtualLinkTypes are netlink link kinds that never have a device behind
// them: an interface of one of these kinds that sysfs does not show (it
// lives in another network namespace than the one sysfs was mounted in) is
// still known to be virtual.
var virtualLinkTypes = map[string]bool{
	"dummy": true, "veth": true, "bridge": true, "bond": true, "vlan": true,
	"macvlan": true, "macvtap": true, "ipvlan": true, "ipvtap": true, "vxlan": true,
	"gre": true, "gretap": true, "ip6gre": true, "ip6gretap": true, "ipip": true,
	"ip6tnl": true, "sit": true, "vti": true, "vti6": true, "tuntap": true, "tun": true,
	"wireguard": true, "geneve": true, "vrf": true, "ifb": true, "nlmon": true,
	"netkit": true, "xfrm": true, "team": true, "bareudp": true, "gtp": true,
}

// usbNetClass names a USB interface class/subclass/protocol that carries a
// network function; "" when the triple is not one.
func usbNetClass(class, sub, proto uint8) string {
	switch {
	case class == 0xe0 && sub == 0x01 && proto == 0x03,
		class == 0xef && sub == 0x04 && proto == 0x01,
		class == 0x02 && sub == 0x02 && proto == 0xff:
		return "RNDIS"
	case class == 0x02 && sub == 0x06:
		return "CDC-ECM"
	case class == 0x02 && sub == 0x0d:
		return "CDC-NCM"
	case class == 0x02 && sub == 0x0c:
		return "CDC-EEM"
	case class == 0x02 && sub == 0x0a:
		return "CDC-MDLM"
	case class == 0x02 && sub == 0x0e:
		return "CDC-MBIM"
	case class == 0xff:
		return "vendor-specific"
	}
	return ""
}

// maxAttr bounds an attribute read: sysfs attributes are at most a page.
const maxAttr = 4096

// arphrdLoopback is ARPHRD_LOOPBACK, the type attribute of a loopback.
const arphrdLoopback = "772"

// classifyNet classifies interface l from the sysfs tree at root
// (class/net/NAME). It never fails: what cannot be decided is KindUnknown
// with the reason why.
func classifyNet(root string, l netLink) netClass {
	c := netClassifier{name: l.Name}
	cl := c.classify(root, l)
	cl.Reason += c.notes()
	return cl
}

type netClassifier struct {
	name  string
	noted []string
}

func (c *netClassifier) note(format string, args ...any) {
	c.noted = append(c.noted, fmt.Sprintf(format, args...))
}

func (c *netClassifier) notes() string {
	if len(c.noted) == 0 {
		return ""
	}
	return " (" + strings.Join(c.noted, "; ") + ")"
}

// withoutSysfs classifies from netlink alone, when sysfs cannot tell.
func withoutSysfs(l netLink, why string) netClass {
	if virtualLinkTypes[l.LinkType] {
		return netClass{Kind: KindVirtual, Reason: "netlink link type " + l.LinkType + ", " + why}
	}
	t := l.LinkType
	if t == "" {
		t = "none"
	}
	return netClass{Kind: KindUnknown, Reason: why + ", netlink link type " + t}
}

func (c *netClassifier) classify(root string, l netLink) netClass {
	if l.Loopback {
		return netClass{Kind: KindLoopback, Reason: "IFF_LOOPBACK"}
	}
	if err := checkName(l.Name); err != nil {
		return netClass{Kind: KindUnknown, Reason: fmt.Sprintf("interface name %q: %v", l.Name, err)}
	}
	rroot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return withoutSysfs(l, "sysfs root unreadable: "+cause(err))
	}
	link := filepath.Join(rroot, "class", "net", l.Name)
	dir, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return withoutSysfs(l, "not in sysfs class/net")
	}
	if err != nil {
		return withoutSysfs(l, "sysfs class/net/"+l.Name+" unreadable: "+cause(err))
	}
	devices := filepath.Join(rroot, "devices")
	if !strings.HasPrefix(dir, devices+string(filepath.Separator)) {
		return netClass{Kind: KindUnknown, Reason: "sysfs class/net/" + l.Name + " resolves outside devices/"}
	}
	// /sys/class/net shows the interfaces of the namespace sysfs was
	// mounted in: one of the same name elsewhere is another interface.
	if idx, err := readAttr(filepath.Join(dir, "ifindex")); err == nil && l.Index > 0 {
		if n, err := strconv.Atoi(strings.TrimSpace(idx)); err != nil || n != l.Index {
			return withoutSysfs(l, fmt.Sprintf("sysfs class/net/%s is another interface (ifindex %s, netlink %d)", l.Name, clip(idx), l.Index))
		}
	}
	if t := c.optional(dir, "type"); t == arphrdLoopback {
		return netClass{Kind: KindLoopback, Reason: "sysfs type 772 (ARPHRD_LOOPBACK)"}
	}
	devtype := ueventValue(c.optional(dir, "uevent"), "DEVTYPE")

	// The device directories above the interface, nearest first: from
	// the device it names (its parent in the tree, above the "net"
	// directory), else from its parent directory.
	start := filepath.Dir(dir)
	if d, err := filepath.EvalSymlinks(filepath.Join(dir, "device")); err == nil {
		start = d
	} else if filepath.Base(start) == "net" {
		start = filepath.Dir(start)
	}
	var ancestors []ancestor
	for d := start; strings.HasPrefix(d, devices+string(filepath.Separator)); d = filepath.Dir(d) {
		a := ancestor{dir: d, name: filepath.Base(d)}
		if t, err := os.Readlink(filepath.Join(d, "subsystem")); err == nil {
			a.subsystem = path.Base(filepath.ToSlash(t))
		}
		ancestors = append(ancestors, a)
	}
	var usbIface, usbDev, bt *ancestor
	for i := range ancestors {
		a := &ancestors[i]
		if usbIface == nil && usbDev == nil && exists(filepath.Join(a.dir, "bInterfaceClass")) {
			usbIface = a
		}
		if usbDev == nil && exists(filepath.Join(a.dir, "idVendor")) {
			usbDev = a
		}
		if bt == nil && a.subsystem == "bluetooth" {
			bt = a
		}
	}

	// The network function's interface ("1-2:1.0") belongs to the device
	// directly above it ("1-2"); anything else is not a tree to trust.
	if usbIface != nil {
		want, _, _ := strings.Cut(usbIface.name, ":")
		parent := filepath.Dir(usbIface.dir)
		if usbDev == nil || usbDev.dir != parent || filepath.Base(parent) != want {
			usbDev = nil
		}
	}

	var cl netClass
	cl.Driver = c.driver(dir)
	virtual := strings.HasPrefix(dir, filepath.Join(devices, "virtual")+string(filepath.Separator))
	hasDevice := exists(filepath.Join(dir, "device"))
	if usbDev != nil {
		cl.VendorID = c.hexID(usbDev.dir, "idVendor")
		cl.ProductID = c.hexID(usbDev.dir, "idProduct")
		if rel, err := filepath.Rel(rroot, usbDev.dir); err == nil {
			cl.USBDevice = filepath.Join(root, rel)
		}
	}
	usb := ""
	if usbDev != nil {
		usb = ", usb ancestor " + usbDev.name
	}

	switch {
	case devtype == "wlan" || exists(filepath.Join(dir, "wireless")) || exists(filepath.Join(dir, "phy80211")):
		cl.Kind = KindWireless
		switch {
		case exists(filepath.Join(dir, "phy80211")):
			cl.Reason = "sysfs phy80211/"
		case exists(filepath.Join(dir, "wireless")):
			cl.Reason = "sysfs wireless/"
		default:
			cl.Reason = "uevent DEVTYPE=wlan"
		}
		cl.Reason += usb
	case devtype == "bluetooth" || bt != nil || (strings.HasPrefix(l.Name, "bnep") && virtual):
		cl.Kind = KindBluetooth
		switch {
		case devtype == "bluetooth":
			cl.Reason = "uevent DEVTYPE=bluetooth"
		case bt != nil:
			cl.Reason = "bluetooth ancestor " + bt.name
		default:
			cl.Reason = "bnep interface"
		}
		if bt != nil && devtype == "bluetooth" {
			cl.Reason += ", bluetooth ancestor " + bt.name
		}
		cl.Reason += usb
	case usbIface != nil && usbDev == nil:
		cl = netClass{Kind: KindUnknown, Driver: cl.Driver,
			Reason: "usb interface " + usbIface.name + " without a usb device above it"}
	case usbDev != nil:
		cl.Kind = KindUSB
		cl.Reason = "usb ancestor " + usbDev.name + c.usbFunction(usbIface, usbDev, cl.Driver)
	case virtual:
		cl.Kind = KindVirtual
		cl.Reason = "sysfs devices/virtual"
		switch {
		case devtype != "":
			cl.Reason += ", DEVTYPE=" + devtype
		case l.LinkType != "" && l.LinkType != "device":
			cl.Reason += ", netlink link type " + l.LinkType
		}
	case !hasDevice:
		return netClass{Kind: KindUnknown, Driver: cl.Driver,
			Reason: "sysfs " + relTo(rroot, dir) + ": no device behind it, not under devices/virtual"}
	case len(ancestors) == 0:
		return netClass{Kind: KindUnknown, Driver: cl.Driver,
			Reason: "sysfs " + relTo(rroot, dir) + ": its device is outside devices/"}
	default:
		cl.Kind = KindEthernet
		parent := ancestors[0]
		if parent.subsystem != "" {
			cl.Reason = parent.subsystem + " device " + parent.name
		} else {
			cl.Reason = "device " + parent.name
		}
		if devtype != "" {
			cl.Reason += ", DEVTYPE=" + devtype
		}
	}
	return cl
}

// usbFunction describes the USB interface the network function sits on:
// the interface directly above the net device, else the first interface
// of the device whose class carries one.
func (c *netClassifier) usbFunction(iface, dev *ancestor, driver string) string {
	describe := func(name string, cl, sub, proto uint8) string {
		s := fmt.Sprintf(", interface %s class %02x/%02x/%02x", name, cl, sub, proto)
		switch n := usbNetClass(cl, sub, proto); n {
		case "":
		case "vendor-specific":
			if driver != "" {
				s += " (vendor-specific, driver " + driver + ")"
			} else {
				s += " (vendor-specific)"
			}
		default:
			s += " (" + n + ")"
		}
		return s
	}
	if iface != nil {
		if cl, sub, proto, ok := c.ifaceClass(iface.dir, iface.name); ok {
			return describe(iface.name, cl, sub, proto)
		}
	}
	entries, err := os.ReadDir(dev.dir)
	if err != nil {
		c.note("interfaces unreadable: %s", cause(err))
		return ""
	}
	prefix := dev.name + ":"
	var names []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if cl, sub, proto, ok := c.ifaceClass(filepath.Join(dev.dir, n), n); ok && usbNetClass(cl, sub, proto) != "" {
			return describe(n, cl, sub, proto)
		}
	}
	c.note("no network interface class found")
	return ""
}

func (c *netClassifier) ifaceClass(dir, name string) (cl, sub, proto uint8, ok bool) {
	var oks [3]bool
	cl, oks[0] = c.hexByte(dir, name, "bInterfaceClass")
	sub, oks[1] = c.hexByte(dir, name, "bInterfaceSubClass")
	proto, oks[2] = c.hexByte(dir, name, "bInterfaceProtocol")
	return cl, sub, proto, oks == [3]bool{true, true, true}
}

func (c *netClassifier) hexByte(dir, iface, attr string) (uint8, bool) {
	v, err := readAttr(filepath.Join(dir, attr))
	if errors.Is(err, fs.ErrNotExist) {
		c.note("interface %s %s missing", iface, attr)
		return 0, false
	}
	if err != nil {
		c.note("interface %s %s unreadable: %s", iface, attr, cause(err))
		return 0, false
	}
	v = strings.TrimSpace(v)
	n, err := strconv.ParseUint(v, 16, 8)
	if err != nil {
		c.note("interface %s %s not hex: %s", iface, attr, clip(v))
		return 0, false
	}
	return uint8(n), true
}

func (c *netClassifier) hexID(dir, attr string) string {
	v, err := readAttr(filepath.Join(dir, attr))
	if err != nil {
		c.note("%s unreadable: %s", attr, cause(err))
		return ""
	}
	v = strings.TrimSpace(v)
	if len(v) != 4 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
		c.note("%s not 4 hex digits: %s", attr, clip(v))
		return ""
	}
	return strings.ToLower(v)
}

// driver names the kernel driver bound to the interface's device.
func (c *netClassifier) driver(dir string) string {
	t, err := os.Readlink(filepath.Join(dir, "device", "driver"))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.note("driver unreadable: %s", cause(err))
		}
		return ""
	}
	return path.Base(filepath.ToSlash(t))
}

// optional reads an attribute that may be absent, noting only when it
// exists but cannot be read.
func (c *netClassifier) optional(dir, attr string) string {
	v, err := readAttr(filepath.Join(dir, attr))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.note("%s unreadable: %s", attr, cause(err))
	}
	return strings.TrimSpace(v)
}

// ancestor is one directory above the interface's in the device tree.
type ancestor struct {
	dir, name, subsystem string
}

// ueventValue returns the value of key in a uevent file's KEY=value lines.
func ueventValue(uevent, key string) string {
	for line := range strings.Lines(uevent) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), key+"="); ok {
			return v
		}
	}
	return ""
}

// readAttr reads a sysfs attribute, without its trailing newline.
func readAttr(name string) (string, error) {
	b, err := limitread.File(name, maxAttr)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

func relTo(root, dir string) string {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return dir
	}
	return filepath.ToSlash(rel)
}

// checkName rejects names that are not a single sysfs directory entry.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return errors.New("not a kernel interface name")
	}
	return nil
}

// cause is the innermost error of a file operation, without the path.
func cause(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// clip quotes an odd attribute value for a reason, at most 32 bytes.
func clip(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 32 {
		v = v[:32] + "…"
	}
	return strconv.Quote(v)
}

// setAuthorized writes v ("0" or "1") to the authorized attribute of the
// USB device directory dir, which must lie under root/devices and be a
// USB device (it has idVendor; an interface such as "1-2:1.0" is not).
// It reads the attribute back: the kernel refuses quietly on some hubs.
func setAuthorized(root, dir, v string) error {
	if dir == "" {
		return errors.New("no usb device directory")
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("usb device directory %q is not an absolute path", dir)
	}
	clean := filepath.Clean(dir)
	devices := filepath.Join(filepath.Clean(root), "devices") + string(filepath.Separator)
	if !strings.HasPrefix(clean, devices) {
		return fmt.Errorf("usb device directory %s is not under %s", dir, devices)
	}
	if _, err := os.Stat(filepath.Join(clean, "idVendor")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(clean); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("usb device %s is gone", dir)
			}
			if exists(filepath.Join(clean, "bInterfaceClass")) {
				return fmt.Errorf("%s is a usb interface, not a usb device", dir)
			}
			return fmt.Errorf("%s is not a usb device (no idVendor)", dir)
		}
		return fmt.Errorf("usb device %s: %w", dir, err)
	}
	name := filepath.Join(clean, "authorized")
	// No O_CREATE: a device without the attribute is an error, not a file
	// to make.
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("usb device %s: open authorized: %w", dir, err)
	}
	if _, err := f.WriteString(v); err != nil {
		f.Close()
		return fmt.Errorf("usb device %s: write authorized=%s: %w", dir, v, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("usb device %s: write authorized=%s: %w", dir, v, err)
	}
	got, err := readAttr(name)
	if err != nil {
		return fmt.Errorf("usb device %s: read authorized back: %w", dir, err)
	}
	if strings.TrimSpace(got) != v {
		return fmt.Errorf("usb device %s: authorized is %s after writing %s", dir, clip(got), v)
	}
	return nil
}
