//go:build windows

package netcheck

// Classification of a Windows adapter: its IfType, the Plug and Play
// instance behind it (the bus it hangs on: USB\…, BTHENUM\…, PCI\…) and,
// when that cannot be read, the driver's description.

import (
	"fmt"
	"strings"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
)

// netClassKey is the network adapters' class key: under it,
// {GUID}\Connection holds the adapter's PnPInstanceId.
const netClassKey = `SYSTEM\CurrentControlSet\Control\Network\{4D36E972-E325-11CE-BFC1-08002BE10318}`

// pnpInstance reads the PnP instance id of the adapter whose AdapterName
// is guid, under the class key base (HKLM).
func pnpInstance(base, guid string) (string, error) {
	if !strings.HasPrefix(guid, "{") || !strings.HasSuffix(guid, "}") || strings.ContainsAny(guid, `\/`) {
		return "", fmt.Errorf("adapter name %q is not a GUID", guid)
	}
	path := base + `\` + guid + `\Connection`
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, path, registry.QUERY_VALUE)
	if err != nil {
		return "", fmt.Errorf(`HKLM\%s: %w`, path, err)
	}
	defer k.Close()
	id, _, err := k.GetStringValue("PnPInstanceId")
	if err != nil {
		return "", fmt.Errorf(`HKLM\%s\PnPInstanceId: %w`, path, err)
	}
	return id, nil
}

// USB network functions that phones and dongles present, as their drivers
// name them.
var usbDescriptions = []string{
	"remote ndis", "rndis", "ncm", "cdc ecm", "cdc ethernet", "apple mobile device ethernet",
	"usb ethernet", "usb 10/100", "usb 2.0 to", "usb3.0 to", "usb 3.0 to", "usb gbe", "usb to ethernet",
}

// Buses whose network adapter is a built-in or virtual machine's NIC.
var wiredBuses = []string{`PCI\`, `ACPI\`, `VMBUS\`, `XENVIF\`, `PCMCIA\`}

// winClass is a Windows adapter's kind and why.
type winClass struct {
	kind, reason        string
	vendorID, productID string
	// usbDevice is the PnP instance id of a KindUSB adapter's device
	// (Adapter.USBDevice: what CutUSB disables).
	usbDevice string
}

// classifyWin decides an adapter's kind from its IfType, description and
// PnP instance id (pnpErr: why the id could not be read). What it cannot
// decide is KindUnknown, with the reason.
func classifyWin(ifType uint32, description, pnp string, pnpErr error) winClass {
	upnp := strings.ToUpper(pnp)
	desc := strings.ToLower(description)
	var c winClass
	onUSB := strings.HasPrefix(upnp, `USB\`)
	if onUSB {
		c.vendorID, c.productID = usbIDs(upnp)
	}
	where := "PnP " + pnp
	if pnpErr != nil {
		where = "PnP instance unreadable (" + pnpErr.Error() + ")"
	}
	switch {
	case ifType == windows.IF_TYPE_SOFTWARE_LOOPBACK:
		c.kind, c.reason = KindLoopback, "IfType 24 (software loopback)"
	case ifType == windows.IF_TYPE_IEEE80211:
		c.kind, c.reason = KindWireless, "IfType 71 (IEEE 802.11)"
		if onUSB {
			c.reason += ", " + where
		}
	case strings.HasPrefix(upnp, `BTH`) || strings.Contains(desc, "bluetooth"):
		c.kind = KindBluetooth
		if strings.HasPrefix(upnp, `BTH`) {
			c.reason = where
		} else {
			c.reason = fmt.Sprintf("description %q", description)
		}
	case onUSB:
		c.kind, c.reason = KindUSB, where
		c.usbDevice = pnp
	case pnpErr != nil && containsAny(desc, usbDescriptions):
		c.kind, c.reason = KindUSB, fmt.Sprintf("description %q, %s", description, where)
	case ifType == windows.IF_TYPE_TUNNEL || ifType == windows.IF_TYPE_PPP:
		c.kind, c.reason = KindVirtual, fmt.Sprintf("IfType %d (%s)", ifType, map[uint32]string{windows.IF_TYPE_TUNNEL: "tunnel", windows.IF_TYPE_PPP: "PPP"}[ifType])
	case strings.HasPrefix(upnp, `ROOT\`) || strings.HasPrefix(upnp, `SWD\`):
		c.kind, c.reason = KindVirtual, where+" (a software device)"
	case ifType == windows.IF_TYPE_ETHERNET_CSMACD && pnpErr == nil && hasAnyPrefix(upnp, wiredBuses):
		c.kind, c.reason = KindEthernet, "IfType 6 (ethernet), "+where
	default:
		c.kind = KindUnknown
		c.reason = fmt.Sprintf("IfType %d, %s, description %q: undecided", ifType, where, description)
	}
	return c
}

// usbIDs reads VID_xxxx and PID_xxxx of a USB instance id.
func usbIDs(upnp string) (vid, pid string) {
	hwid, _, _ := strings.Cut(strings.TrimPrefix(upnp, `USB\`), `\`)
	for part := range strings.SplitSeq(hwid, "&") {
		if v, ok := strings.CutPrefix(part, "VID_"); ok && len(v) == 4 {
			vid = strings.ToLower(v)
		}
		if v, ok := strings.CutPrefix(part, "PID_"); ok && len(v) == 4 {
			pid = strings.ToLower(v)
		}
	}
	return vid, pid
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
