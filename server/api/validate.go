package api

import (
	"fmt"
	"net/netip"
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Limits on what an agent may send. A real terminal stays far below them;
// they exist so a broken or hostile agent cannot bloat the store.
const (
	MaxMessageBytes     = 1 << 20
	maxShortString      = 256
	maxLongString       = 4096
	maxInterfaces       = 256
	maxAddrsPerIface    = 64
	maxUSBDevices       = 512
	maxUSBInterfaces    = 64
	maxEventsPerReport  = 1000
	maxEventAttributes  = 32
	maxFutureClockSkew  = 24 * time.Hour
	maxEventTypeLength  = 64
	maxPolicyVersionLen = 64
)

var (
	eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)
	hex4RE      = regexp.MustCompile(`^[0-9a-f]{4}$`)
)

// fieldError names the offending field.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func errField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// checkString refuses strings that are too long or carry control characters
// (which would garble tables, CSV exports and logs).
func checkString(field, s string, max int) error {
	if len(s) > max {
		return errField(field, "longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errField(field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errField(field, "contains control character %U", r)
		}
	}
	return nil
}

// ValidateHostFacts checks host facts sent at enrollment and in posture.
func ValidateHostFacts(h *mnguardv1.HostFacts) error {
	if h == nil {
		return errField("host", "missing")
	}
	if h.GetHostname() == "" {
		return errField("host.hostname", "empty")
	}
	for _, f := range []struct {
		name, val string
	}{
		{"host.hostname", h.GetHostname()},
		{"host.os", h.GetOs()},
		{"host.platform", h.GetPlatform()},
		{"host.platform_version", h.GetPlatformVersion()},
		{"host.kernel_version", h.GetKernelVersion()},
		{"host.arch", h.GetArch()},
		{"host.machine_id", h.GetMachineId()},
		{"host.agent_version", h.GetAgentVersion()},
	} {
		if err := checkString(f.name, f.val, maxShortString); err != nil {
			return err
		}
	}
	return nil
}

// ValidatePosture checks a posture snapshot as it arrives from an agent.
func ValidatePosture(p *mnguardv1.Posture, now time.Time) error {
	if p.GetCollectedAt() == nil {
		return errField("posture.collected_at", "missing")
	}
	if err := p.GetCollectedAt().CheckValid(); err != nil {
		return errField("posture.collected_at", "%v", err)
	}
	if t := p.GetCollectedAt().AsTime(); t.After(now.Add(maxFutureClockSkew)) {
		return errField("posture.collected_at", "%s is more than %s in the future", t.Format(time.RFC3339), maxFutureClockSkew)
	}
	if err := ValidateHostFacts(p.GetHost()); err != nil {
		return fmt.Errorf("posture.%w", err)
	}
	if bt := p.GetBootTime(); bt != nil {
		if err := bt.CheckValid(); err != nil {
			return errField("posture.boot_time", "%v", err)
		}
	}
	for _, f := range []struct {
		name, val string
		max       int
	}{
		{"posture.cpu_model", p.GetCpuModel(), maxShortString},
		{"posture.agent_version", p.GetAgentVersion(), maxShortString},
		{"posture.policy_version", p.GetPolicyVersion(), maxPolicyVersionLen},
		{"posture.usb_inventory_error", p.GetUsbInventoryError(), maxLongString},
	} {
		if err := checkString(f.name, f.val, f.max); err != nil {
			return err
		}
	}
	if n := len(p.GetInterfaces()); n > maxInterfaces {
		return errField("posture.interfaces", "%d interfaces, at most %d", n, maxInterfaces)
	}
	for i, ifc := range p.GetInterfaces() {
		field := fmt.Sprintf("posture.interfaces[%d]", i)
		if err := checkString(field+".name", ifc.GetName(), maxShortString); err != nil {
			return err
		}
		if err := checkString(field+".hardware_addr", ifc.GetHardwareAddr(), maxShortString); err != nil {
			return err
		}
		if n := len(ifc.GetAddrs()); n > maxAddrsPerIface {
			return errField(field+".addrs", "%d addresses, at most %d", n, maxAddrsPerIface)
		}
		for j, a := range ifc.GetAddrs() {
			if _, err := netip.ParsePrefix(a); err != nil {
				return errField(fmt.Sprintf("%s.addrs[%d]", field, j), "%q is not an address in CIDR notation", truncate(a))
			}
		}
		if len(ifc.GetFlags()) > 32 {
			return errField(field+".flags", "too many flags")
		}
		for j, fl := range ifc.GetFlags() {
			if err := checkString(fmt.Sprintf("%s.flags[%d]", field, j), fl, 64); err != nil {
				return err
			}
		}
	}
	if n := len(p.GetUsbDevices()); n > maxUSBDevices {
		return errField("posture.usb_devices", "%d devices, at most %d", n, maxUSBDevices)
	}
	for i, d := range p.GetUsbDevices() {
		field := fmt.Sprintf("posture.usb_devices[%d]", i)
		if !hex4RE.MatchString(d.GetVendorId()) {
			return errField(field+".vendor_id", "%q is not four lowercase hex digits", truncate(d.GetVendorId()))
		}
		if !hex4RE.MatchString(d.GetProductId()) {
			return errField(field+".product_id", "%q is not four lowercase hex digits", truncate(d.GetProductId()))
		}
		for _, f := range []struct{ name, val string }{
			{".serial", d.GetSerial()}, {".manufacturer", d.GetManufacturer()}, {".product", d.GetProduct()},
		} {
			if err := checkString(field+f.name, f.val, maxShortString); err != nil {
				return err
			}
		}
		if n := len(d.GetInterfaces()); n > maxUSBInterfaces {
			return errField(field+".interfaces", "%d interfaces, at most %d", n, maxUSBInterfaces)
		}
		for j, ui := range d.GetInterfaces() {
			if ui.GetClass() > 0xff || ui.GetSubclass() > 0xff || ui.GetProtocol() > 0xff {
				return errField(fmt.Sprintf("%s.interfaces[%d]", field, j), "class, subclass and protocol must be bytes")
			}
			if err := checkString(fmt.Sprintf("%s.interfaces[%d].class_name", field, j), ui.GetClassName(), 64); err != nil {
				return err
			}
		}
	}
	if err := validateMedia(p.GetMedia()); err != nil {
		return err
	}
	if err := validateNetwork(p.GetNetwork()); err != nil {
		return err
	}
	return nil
}

// Limits of the network section of a posture.
const (
	maxNetAdapters   = 256
	maxNetRoutes     = 4096
	maxNetFindings   = 1024
	maxNetDNSServers = 256
	maxNetScanErrors = 64
	maxNetString     = 512
)

// stringField is one string of a message to check with checkString.
type stringField struct {
	name, val string
}

func checkStrings(prefix string, max int, fs ...stringField) error {
	for _, f := range fs {
		if err := checkString(prefix+f.name, f.val, max); err != nil {
			return err
		}
	}
	return nil
}

// validateNetwork checks the network section of a posture: counts and
// string lengths bounded, no control characters, valid times.
func validateNetwork(n *mnguardv1.NetworkPosture) error {
	if n == nil {
		return nil
	}
	const f = "posture.network"
	if err := checkString(f+".policy_version", n.GetPolicyVersion(), maxPolicyVersionLen); err != nil {
		return err
	}
	for _, c := range []struct {
		name     string
		n, limit int
	}{
		{"adapters", len(n.GetAdapters()), maxNetAdapters},
		{"routes", len(n.GetRoutes()), maxNetRoutes},
		{"dns_servers", len(n.GetDnsServers()), maxNetDNSServers},
		{"findings", len(n.GetFindings()), maxNetFindings},
		{"scan_errors", len(n.GetScanErrors()), maxNetScanErrors},
	} {
		if c.n > c.limit {
			return errField(f+"."+c.name, "%d entries, at most %d", c.n, c.limit)
		}
	}
	for i, a := range n.GetAdapters() {
		field := fmt.Sprintf("%s.adapters[%d]", f, i)
		if a.GetName() == "" {
			return errField(field+".name", "empty")
		}
		if err := checkStrings(field, maxNetString,
			stringField{".name", a.GetName()}, stringField{".kind", a.GetKind()}, stringField{".reason", a.GetReason()},
			stringField{".hardware_addr", a.GetHardwareAddr()}, stringField{".driver", a.GetDriver()}, stringField{".state", a.GetState()},
		); err != nil {
			return err
		}
		if !optHex4RE.MatchString(a.GetVendorId()) || !optHex4RE.MatchString(a.GetProductId()) {
			return errField(field, "vendor_id and product_id must be four lowercase hex digits or empty")
		}
		if k := len(a.GetAddrs()); k > maxAddrsPerIface {
			return errField(field+".addrs", "%d addresses, at most %d", k, maxAddrsPerIface)
		}
		for j, ad := range a.GetAddrs() {
			if err := checkString(fmt.Sprintf("%s.addrs[%d]", field, j), ad, maxNetString); err != nil {
				return err
			}
		}
	}
	for i, r := range n.GetRoutes() {
		if err := checkStrings(fmt.Sprintf("%s.routes[%d]", f, i), maxNetString,
			stringField{".destination", r.GetDestination()}, stringField{".gateway", r.GetGateway()},
			stringField{".interface", r.GetInterface()}, stringField{".table", r.GetTable()},
		); err != nil {
			return err
		}
	}
	for i, d := range n.GetDnsServers() {
		if err := checkStrings(fmt.Sprintf("%s.dns_servers[%d]", f, i), maxNetString,
			stringField{".address", d.GetAddress()}, stringField{".source", d.GetSource()},
		); err != nil {
			return err
		}
	}
	for i, fd := range n.GetFindings() {
		field := fmt.Sprintf("%s.findings[%d]", f, i)
		if fd.GetKind() == "" {
			return errField(field+".kind", "empty")
		}
		if err := checkStrings(field, maxNetString,
			stringField{".id", fd.GetId()}, stringField{".kind", fd.GetKind()}, stringField{".detail", fd.GetDetail()},
			stringField{".process", fd.GetProcess()}, stringField{".user", fd.GetUser()},
			stringField{".interface", fd.GetInterface()}, stringField{".address", fd.GetAddress()},
		); err != nil {
			return err
		}
		if t := fd.GetFirstSeen(); t != nil && t.CheckValid() != nil {
			return errField(field+".first_seen", "invalid time")
		}
	}
	for i, e := range n.GetScanErrors() {
		if err := checkString(fmt.Sprintf("%s.scan_errors[%d]", f, i), e, maxNetString); err != nil {
			return err
		}
	}
	if e := n.GetEnforcement(); e != nil {
		if err := checkStrings(f+".enforcement", maxNetString,
			stringField{".mechanism", e.GetMechanism()}, stringField{".detail", e.GetDetail()},
		); err != nil {
			return err
		}
		if t := e.GetLastRepair(); t != nil && t.CheckValid() != nil {
			return errField(f+".enforcement.last_repair", "invalid time")
		}
	}
	if t := n.GetLastScan(); t != nil && t.CheckValid() != nil {
		return errField(f+".last_scan", "invalid time")
	}
	return nil
}

var (
	mediaModes  = map[string]bool{"enforce": true, "monitor": true}
	mediaStates = map[string]bool{"read-only": true, "writable": true, "exempted": true, "deauthorized": true, "": true}
	mediaBuses  = map[string]bool{"usb": true, "mmc": true, "firewire": true, "optical": true, "other": true, "test": true}
	optHex4RE   = regexp.MustCompile(`^([0-9a-f]{4})?$`)
)

const maxRemovableDevices = 256

// validateMedia checks the removable-media section of a posture.
func validateMedia(m *mnguardv1.MediaPosture) error {
	if m == nil {
		return nil
	}
	if !mediaModes[m.GetMode()] {
		return errField("posture.media.mode", "%q is not enforce or monitor", truncate(m.GetMode()))
	}
	if err := checkString("posture.media.unhealthy_reason", m.GetUnhealthyReason(), maxLongString); err != nil {
		return err
	}
	if len(m.GetTreatAsRemovable()) > 32 {
		return errField("posture.media.treat_as_removable", "too many patterns")
	}
	for i, p := range m.GetTreatAsRemovable() {
		if err := checkString(fmt.Sprintf("posture.media.treat_as_removable[%d]", i), p, 64); err != nil {
			return err
		}
	}
	if n := len(m.GetDevices()); n > maxRemovableDevices {
		return errField("posture.media.devices", "%d devices, at most %d", n, maxRemovableDevices)
	}
	for i, d := range m.GetDevices() {
		field := fmt.Sprintf("posture.media.devices[%d]", i)
		if d.GetName() == "" {
			return errField(field+".name", "empty")
		}
		if !mediaBuses[d.GetBus()] {
			return errField(field+".bus", "%q is not a known bus", truncate(d.GetBus()))
		}
		if !mediaStates[d.GetState()] {
			return errField(field+".state", "%q is not a known state", truncate(d.GetState()))
		}
		if !optHex4RE.MatchString(d.GetVendorId()) || !optHex4RE.MatchString(d.GetProductId()) {
			return errField(field, "vendor_id and product_id must be four lowercase hex digits or empty")
		}
		for _, f := range []struct {
			name, val string
			max       int
		}{
			{".name", d.GetName(), 64}, {".serial", d.GetSerial(), maxShortString}, {".model", d.GetModel(), maxShortString},
			{".reason", d.GetReason(), maxLongString}, {".detail", d.GetDetail(), maxLongString},
		} {
			if err := checkString(field+f.name, f.val, f.max); err != nil {
				return err
			}
		}
		if len(d.GetPartitions()) > 128 || len(d.GetInterfaces()) > maxUSBInterfaces {
			return errField(field, "too many partitions or interfaces")
		}
		for j, p := range d.GetPartitions() {
			if err := checkString(fmt.Sprintf("%s.partitions[%d]", field, j), p, 64); err != nil {
				return err
			}
		}
		for j, ui := range d.GetInterfaces() {
			if ui.GetClass() > 0xff || ui.GetSubclass() > 0xff || ui.GetProtocol() > 0xff {
				return errField(fmt.Sprintf("%s.interfaces[%d]", field, j), "class, subclass and protocol must be bytes")
			}
		}
		if at := d.GetAttachedAt(); at != nil && at.CheckValid() != nil {
			return errField(field+".attached_at", "invalid time")
		}
	}
	return nil
}

// ValidateEvents checks the events of one report: sequence numbers
// positive and distinct, types well-formed, sizes bounded.
func ValidateEvents(evs []*mnguardv1.Event, now time.Time) error {
	if len(evs) > maxEventsPerReport {
		return errField("events", "%d events, at most %d per report", len(evs), maxEventsPerReport)
	}
	seen := make(map[uint64]bool, len(evs))
	for i, e := range evs {
		field := fmt.Sprintf("events[%d]", i)
		if e.GetSeq() == 0 {
			return errField(field+".seq", "must be at least 1")
		}
		if e.GetSeq() > maxEventSeq {
			return errField(field+".seq", "%d is above %d, the largest sequence number the collector stores", e.GetSeq(), uint64(maxEventSeq))
		}
		if seen[e.GetSeq()] {
			return errField(field+".seq", "%d appears twice in one report", e.GetSeq())
		}
		seen[e.GetSeq()] = true
		if e.GetTime() == nil {
			return errField(field+".time", "missing")
		}
		if err := e.GetTime().CheckValid(); err != nil {
			return errField(field+".time", "%v", err)
		}
		if t := e.GetTime().AsTime(); t.After(now.Add(maxFutureClockSkew)) {
			return errField(field+".time", "%s is more than %s in the future", t.Format(time.RFC3339), maxFutureClockSkew)
		}
		if len(e.GetType()) > maxEventTypeLength || !eventTypeRE.MatchString(e.GetType()) {
			return errField(field+".type", "%q is not a dotted lowercase event type", truncate(e.GetType()))
		}
		if reservedEventTypes[e.GetType()] {
			return errField(field+".type", "%q is reserved for events the collector records itself", e.GetType())
		}
		if _, ok := mnguardv1.Severity_name[int32(e.GetSeverity())]; !ok {
			return errField(field+".severity", "unknown severity %d", e.GetSeverity())
		}
		if err := checkString(field+".message", e.GetMessage(), maxLongString); err != nil {
			return err
		}
		if n := len(e.GetAttributes()); n > maxEventAttributes {
			return errField(field+".attributes", "%d attributes, at most %d", n, maxEventAttributes)
		}
		for k, v := range e.GetAttributes() {
			if err := checkString(field+".attributes key", k, 64); err != nil {
				return err
			}
			if k == "" {
				return errField(field+".attributes", "empty key")
			}
			if err := checkString(field+".attributes["+k+"]", v, maxLongString); err != nil {
				return err
			}
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
