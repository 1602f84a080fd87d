package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/version"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Limits of the requests, as the server enforces them.
const (
	// defaultListLimit is how many events or audit entries a list shows
	// without --limit: the newest.
	defaultListLimit  = 100
	defaultTokenTTL   = 24 * time.Hour
	maxTokenTTL       = 8760 * time.Hour
	maxEventLimit     = 10000000
	maxAuditLimit     = 10000000
	maxTerminalLimit  = 100000
	maxTerminalOffset = 10000000
	maxSearch         = 128
	maxAuditAction    = 64
	maxEventType      = 64
)

// Compliance states, checks and sort keys of terminals list, as the
// collector names them (see mnguardv1.Compliance).
var (
	complianceStates = []string{"compliant", "non-compliant", "stale", "revoked"}
	complianceChecks = []string{"media", "mfa", "network", "fresh", "version", "certificate", "exemptions"}
	terminalSorts    = []string{"hostname", "state", "last_seen", "agent_version", "enrolled"}
)

// checkFail is the status of a failing compliance check.
const checkFail = "fail"

// terminalsRequest validates the flags of terminals list. Its Limit is
// what --limit asks for in all (0: every terminal), which the CLI counts
// itself over the pages.
func terminalsRequest(inv *invocation) (*mnguardv1.ListTerminalsRequest, error) {
	o := inv.opts
	req := &mnguardv1.ListTerminalsRequest{
		State: o.state.v, FailingCheck: o.check.v, Search: strings.TrimSpace(o.search.v), Sort: o.sort.v, Descending: o.desc,
	}
	for _, f := range []struct {
		name, v string
		valid   []string
	}{{"state", o.state.v, complianceStates}, {"check", o.check.v, complianceChecks}, {"sort", o.sort.v, terminalSorts}} {
		if f.v != "" && !slices.Contains(f.valid, f.v) {
			return nil, usagef("terminals list: invalid --%s %q: want %s", f.name, f.v, orList(f.valid))
		}
	}
	if err := checkText(inv, "search", req.Search, maxSearch); err != nil {
		return nil, err
	}
	if o.limit.set {
		n, err := parseCount(inv, "limit", o.limit.v, 1, maxTerminalLimit)
		if err != nil {
			return nil, err
		}
		req.Limit = uint32(n)
	}
	if o.offset.set {
		n, err := parseCount(inv, "offset", o.offset.v, 0, maxTerminalOffset)
		if err != nil {
			return nil, err
		}
		req.Offset = uint32(n)
	}
	return req, nil
}

func terminalsList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req, err := terminalsRequest(inv)
	if err != nil {
		return err
	}
	limit, skip := int(req.GetLimit()), req.GetOffset()
	// The collector pages by page_size; Limit stays 0 (a collector from
	// before pages would take it as the size of its one answer).
	req.Limit = 0
	ts, last, err := collectPages(ctx, inv, "list terminals", mnguardv1.AdminServiceClient.ListTerminals, req,
		func(token string, size uint32) {
			req.PageToken, req.PageSize = token, size
			if token != "" {
				req.Offset = 0 // the token says where the next page starts
			}
		}, (*mnguardv1.ListTerminalsResponse).GetNextPageToken, (*mnguardv1.ListTerminalsResponse).GetTerminals, limit)
	if err != nil {
		return err
	}
	req.Offset = skip
	resp := &mnguardv1.ListTerminalsResponse{Terminals: ts, Total: last.GetTotal()}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	if err := writeList(w, inv.format, inv.terminalColumns(ts), ts); err != nil {
		return err
	}
	// Say so when the table is a page of a longer list. A server that does
	// not count (total 0) says nothing.
	n, total, offset := uint64(len(ts)), uint64(resp.GetTotal()), uint64(req.GetOffset())
	if inv.format == formatTable && total > 0 && (offset > 0 || n < total) {
		switch n {
		case 0:
			fmt.Fprintf(w, "none at offset %d: %s match\n", offset, plural(total, "terminal", "terminals"))
		case 1:
			fmt.Fprintf(w, "terminal %d of %d (--offset and --limit show others)\n", offset+1, total)
		default:
			fmt.Fprintf(w, "terminals %d to %d of %d (--offset and --limit show others)\n", offset+1, offset+n, total)
		}
	}
	return nil
}

// terminalColumns are the columns of terminals; CSV has one column per
// compliance check, those of complianceChecks and any other that ts carry.
func (inv *invocation) terminalColumns(ts []*mnguardv1.Terminal) []column[*mnguardv1.Terminal] {
	type T = *mnguardv1.Terminal
	cols := []column[T]{
		{"ID", "id", func(t T) string { return t.GetId() }, nil},
		{"HOSTNAME", "hostname", func(t T) string { return t.GetHost().GetHostname() }, nil},
		{"OS", "", func(t T) string { return platformText(t.GetHost()) }, nil},
		{"", "os", nil, func(t T) string { return t.GetHost().GetOs() }},
		{"", "platform", nil, func(t T) string { return t.GetHost().GetPlatform() }},
		{"", "platform_version", nil, func(t T) string { return t.GetHost().GetPlatformVersion() }},
		{"STATE", "state", func(t T) string { return stateText(t.GetState()) }, nil},
		{"COMPLIANCE", "", func(t T) string { return complianceText(t.GetCompliance()) }, nil},
		{"", "enrolled_at", nil, func(t T) string { return inv.timeText(t.GetEnrolledAt()) }},
		{"LAST SEEN", "last_seen_at", func(t T) string { return inv.lastSeen(t) }, func(t T) string { return inv.timeText(t.GetLastSeenAt()) }},
		{"AGENT", "agent_version", func(t T) string { return t.GetHost().GetAgentVersion() }, nil},
		{"CERT EXPIRES", "certificate_not_after", func(t T) string { return inv.timeText(t.GetCertificateNotAfter()) }, nil},
		{"", "revoked_at", nil, func(t T) string { return inv.timeText(t.GetRevokedAt()) }},
		{"", "compliance_state", nil, func(t T) string { return t.GetCompliance().GetState() }},
		{"", "compliance_since", nil, func(t T) string { return inv.timeText(t.GetCompliance().GetStateSince()) }},
		{"", "compliance_offline", nil, func(t T) string {
			if t.GetCompliance() == nil {
				return ""
			}
			return strconv.FormatBool(t.GetCompliance().GetOffline())
		}},
	}
	names := slices.Clone(complianceChecks)
	for _, t := range ts {
		for _, r := range t.GetCompliance().GetChecks() {
			if !slices.Contains(names, r.GetName()) {
				names = append(names, r.GetName())
			}
		}
	}
	for _, name := range names {
		cols = append(cols, column[T]{"", "check_" + name, nil, func(t T) string { return checkStatus(t.GetCompliance(), name) }})
	}
	return cols
}

// checkStatus is the status of the named check: pass, fail, unknown, or ""
// when the verdict does not have it.
func checkStatus(c *mnguardv1.Compliance, name string) string {
	for _, r := range c.GetChecks() {
		if r.GetName() == name {
			return r.GetStatus()
		}
	}
	return ""
}

// complianceText is the verdict in a few words: the state, whether the
// terminal is offline, and the failing checks, as in "non-compliant: mfa,
// version".
func complianceText(c *mnguardv1.Compliance) string {
	if c == nil {
		return "not evaluated"
	}
	s := c.GetState()
	if c.GetOffline() {
		s += " (offline)"
	}
	var failing []string
	for _, r := range c.GetChecks() {
		if r.GetStatus() == checkFail {
			failing = append(failing, r.GetName())
		}
	}
	if len(failing) > 0 {
		s += ": " + strings.Join(failing, ", ")
	}
	return s
}

// complianceField is the compliance section of terminals show: the verdict,
// then each check with its status, why it does not pass, and since when.
func (inv *invocation) complianceField(c *mnguardv1.Compliance) field {
	if c == nil {
		return field{key: "compliance.state", label: "Compliance", value: "not evaluated yet"}
	}
	f := field{key: "compliance.state", label: "Compliance", value: complianceText(c), raw: c.GetState(), sub: []field{
		inv.timeField("compliance.state_since", "Since", c.GetStateSince()),
		inv.timeField("compliance.evaluated_at", "Evaluated", c.GetEvaluatedAt()),
		kv("compliance.offline", "", strconv.FormatBool(c.GetOffline())),
	}}
	checks := field{label: "Checks"}
	if len(c.GetChecks()) == 0 {
		checks.value = "none"
	}
	for _, r := range c.GetChecks() {
		prefix := "compliance.checks." + r.GetName() + "."
		v := r.GetStatus()
		if v == checkFail {
			v = "FAIL"
		}
		if d := r.GetDetail(); d != "" {
			v += ": " + d
		}
		since := inv.timeField(prefix+"since", "Since", r.GetSince())
		if r.GetStatus() != checkFail {
			since.label = "" // only in CSV: when a check started failing is what matters
		}
		checks.sub = append(checks.sub, field{label: r.GetName(), value: v, sub: []field{
			kv(prefix+"status", "", r.GetStatus()),
			kv(prefix+"detail", "", r.GetDetail()),
			since,
		}})
	}
	f.sub = append(f.sub, checks)
	return f
}

func (inv *invocation) lastSeen(t *mnguardv1.Terminal) string {
	if t.GetLastSeenAt() == nil {
		return "never"
	}
	return inv.timeRel(t.GetLastSeenAt())
}

// platformText is "debian 12", or the OS family when the platform is not
// known.
func platformText(h *mnguardv1.HostFacts) string {
	if h.GetPlatform() == "" {
		return h.GetOs()
	}
	return strings.TrimSpace(h.GetPlatform() + " " + h.GetPlatformVersion())
}

func stateText(s mnguardv1.TerminalState) string {
	switch s {
	case mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE:
		return "active"
	case mnguardv1.TerminalState_TERMINAL_STATE_REVOKED:
		return "revoked"
	}
	return "unknown"
}

func terminalsShow(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	id := inv.args[0]
	resp, _, err := request(ctx, inv, "show terminal "+id, mnguardv1.AdminServiceClient.GetTerminal, &mnguardv1.GetTerminalRequest{Id: id})
	if err != nil {
		return err
	}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeFields(w, inv.format, inv.terminalFields(resp.GetTerminal()))
}

func (inv *invocation) terminalFields(t *mnguardv1.Terminal) []field {
	h := t.GetHost()
	lastSeen := inv.timeField("last_seen_at", "Last seen", t.GetLastSeenAt())
	if t.GetLastSeenAt() == nil {
		lastSeen.value = "never"
	}
	n := uint64(t.GetPostureHistoryCount())
	fs := []field{
		kv("id", "ID", t.GetId()),
		kv("hostname", "Hostname", h.GetHostname()),
		kv("os", "OS", h.GetOs()),
		{key: "platform", label: "Platform", value: platformText(h), raw: h.GetPlatform()},
		kv("platform_version", "", h.GetPlatformVersion()),
		kv("kernel_version", "Kernel", h.GetKernelVersion()),
		kv("arch", "Arch", h.GetArch()),
		kv("machine_id", "Machine ID", h.GetMachineId()),
		kv("agent_version", "Agent version", h.GetAgentVersion()),
		kv("state", "State", stateText(t.GetState())),
		inv.timeField("enrolled_at", "Enrolled", t.GetEnrolledAt()),
		lastSeen,
		inv.timeField("revoked_at", "Revoked", t.GetRevokedAt()),
		kv("certificate_serial", "Certificate serial", t.GetCertificateSerial()),
		inv.timeField("certificate_not_after", "Certificate expires", t.GetCertificateNotAfter()),
		inv.timeField("posture_received_at", "Posture received", t.GetPostureReceivedAt()),
		{key: "posture_history_count", label: "Posture history", value: plural(n, "snapshot", "snapshots"), raw: strconv.FormatUint(n, 10)},
		inv.complianceField(t.GetCompliance()),
	}
	if t.GetPosture() == nil {
		return append(fs, field{label: "Posture", value: "none reported"})
	}
	return append(fs, field{label: "Posture", sub: inv.postureFields(t.GetPosture())})
}

func (inv *invocation) postureFields(p *mnguardv1.Posture) []field {
	up := p.GetUptimeSeconds()
	mem := p.GetMemoryTotalBytes()
	fs := []field{
		inv.timeField("posture.collected_at", "Collected", p.GetCollectedAt()),
		inv.timeField("posture.boot_time", "Boot time", p.GetBootTime()),
		{key: "posture.uptime_seconds", label: "Uptime", value: longDuration(time.Duration(up) * time.Second), raw: strconv.FormatUint(up, 10)},
		kv("posture.cpu_count", "CPUs", strconv.FormatUint(uint64(p.GetCpuCount()), 10)),
		kv("posture.cpu_model", "CPU model", p.GetCpuModel()),
		{key: "posture.memory_total_bytes", label: "Memory", value: humanBytes(mem), raw: strconv.FormatUint(mem, 10)},
		kv("posture.agent_version", "Agent version", p.GetAgentVersion()),
		kv("posture.policy_version", "Policy version", p.GetPolicyVersion()),
	}

	ifaces := field{label: "Interfaces"}
	if len(p.GetInterfaces()) == 0 {
		ifaces.value = "none"
	}
	for i, n := range p.GetInterfaces() {
		prefix := fmt.Sprintf("posture.interfaces.%d.", i)
		addrs := strings.Join(n.GetAddrs(), ", ")
		if addrs == "" {
			addrs = "no address"
		}
		ifaces.sub = append(ifaces.sub, field{label: n.GetName(), value: addrs, sub: []field{
			kv(prefix+"name", "", n.GetName()),
			kv(prefix+"addrs", "", strings.Join(n.GetAddrs(), " ")),
			kv(prefix+"hardware_addr", "MAC", n.GetHardwareAddr()),
			{key: prefix + "flags", label: "Flags", value: strings.Join(n.GetFlags(), ", "), raw: strings.Join(n.GetFlags(), " ")},
			kv(prefix+"mtu", "MTU", strconv.FormatUint(uint64(n.GetMtu()), 10)),
		}})
	}
	fs = append(fs, ifaces)

	usb := field{label: "USB devices"}
	if len(p.GetUsbDevices()) == 0 {
		usb.value = "none"
	}
	for i, d := range p.GetUsbDevices() {
		prefix := fmt.Sprintf("posture.usb_devices.%d.", i)
		serial := field{key: prefix + "serial", label: "Serial", value: d.GetSerial(), raw: d.GetSerial()}
		if serial.value == "" {
			serial.value = "none (cannot be told apart from its twins)"
		}
		var classes []string
		for _, in := range d.GetInterfaces() {
			classes = append(classes, usbInterfaceText(in))
		}
		usb.sub = append(usb.sub, field{
			label: orUnknown(d.GetVendorId()) + ":" + orUnknown(d.GetProductId()),
			value: strings.TrimSpace(d.GetManufacturer() + " " + d.GetProduct()),
			sub: []field{
				kv(prefix+"vendor_id", "", d.GetVendorId()),
				kv(prefix+"product_id", "", d.GetProductId()),
				kv(prefix+"manufacturer", "", d.GetManufacturer()),
				kv(prefix+"product", "", d.GetProduct()),
				serial,
				{key: prefix + "bus", label: "Bus", value: fmt.Sprintf("%d, address %d", d.GetBus(), d.GetAddress()), raw: strconv.FormatUint(uint64(d.GetBus()), 10)},
				kv(prefix+"address", "", strconv.FormatUint(uint64(d.GetAddress()), 10)),
				kv(prefix+"device_class", "", strconv.FormatUint(uint64(d.GetDeviceClass()), 10)),
				{key: prefix + "interfaces", label: "Interfaces", value: strings.Join(classes, ", "), raw: strings.Join(classes, "; ")},
			},
		})
	}
	fs = append(fs, usb)
	if e := p.GetUsbInventoryError(); e != "" {
		fs = append(fs, kv("posture.usb_inventory_error", "USB inventory error", e))
	}
	if m := p.GetMedia(); m != nil {
		fs = append(fs, inv.mediaField(m))
	}
	if m := p.GetMfa(); m != nil {
		fs = append(fs, mfaField(m))
	}
	return fs
}

// mfaField is the login section: whether logins need the second factor,
// and each PAM service's stack.
func mfaField(m *mnguardv1.MfaPosture) field {
	state := "enforced"
	if !m.GetEnforced() {
		state = "NOT ENFORCED: " + m.GetReason()
	}
	serving := "not served"
	if m.GetSocketServing() {
		serving = "served"
	}
	f := field{label: "Login MFA", value: state, sub: []field{
		kv("posture.mfa.enforced", "", strconv.FormatBool(m.GetEnforced())),
		kv("posture.mfa.reason", "", m.GetReason()),
		{key: "posture.mfa.socket", label: "Socket", value: m.GetSocket() + ", " + serving, raw: m.GetSocket()},
		kv("posture.mfa.socket_serving", "", strconv.FormatBool(m.GetSocketServing())),
	}}
	for i, svc := range m.GetServices() {
		prefix := fmt.Sprintf("posture.mfa.services.%d.", i)
		v := "not present"
		switch {
		case svc.GetPresent() && svc.GetMfaRequired():
			v = "pam_mnguard required"
		case svc.GetPresent():
			v = "NOT REQUIRED: " + svc.GetReason()
		}
		f.sub = append(f.sub, field{label: "PAM " + svc.GetName(), value: v, sub: []field{
			kv(prefix+"name", "", svc.GetName()),
			kv(prefix+"present", "", strconv.FormatBool(svc.GetPresent())),
			kv(prefix+"mfa_required", "", strconv.FormatBool(svc.GetMfaRequired())),
			kv(prefix+"module_line", "Line", svc.GetModuleLine()),
			kv(prefix+"reason", "", svc.GetReason()),
		}})
	}
	return f
}

// mediaField is the removable-media section: enforcement health, the
// fail-closed layers, and each removable device with its state.
func (inv *invocation) mediaField(m *mnguardv1.MediaPosture) field {
	health := "healthy"
	if !m.GetHealthy() {
		health = "NOT HEALTHY: " + m.GetUnhealthyReason()
	}
	yes := func(b bool) string {
		if b {
			return "installed"
		}
		return "missing"
	}
	f := field{label: "Removable media", value: m.GetMode() + ", " + health, sub: []field{
		kv("posture.media.mode", "", m.GetMode()),
		kv("posture.media.healthy", "", strconv.FormatBool(m.GetHealthy())),
		kv("posture.media.unhealthy_reason", "", m.GetUnhealthyReason()),
		{key: "posture.media.udev_rule_installed", label: "udev rule", value: yes(m.GetUdevRuleInstalled()), raw: strconv.FormatBool(m.GetUdevRuleInstalled())},
		{key: "posture.media.udisks_rule_installed", label: "udisks rule", value: yes(m.GetUdisksRuleInstalled()), raw: strconv.FormatBool(m.GetUdisksRuleInstalled())},
		inv.timeField("posture.media.last_reconcile", "Last scan", m.GetLastReconcile()),
	}}
	if t := m.GetTreatAsRemovable(); len(t) > 0 {
		f.sub = append(f.sub, kv("posture.media.treat_as_removable", "TEST MODE, also removable", strings.Join(t, " ")))
	}
	devs := field{label: "Devices"}
	if len(m.GetDevices()) == 0 {
		devs.value = "none attached"
	}
	for i, d := range m.GetDevices() {
		prefix := fmt.Sprintf("posture.media.devices.%d.", i)
		id := orUnknown(d.GetVendorId()) + ":" + orUnknown(d.GetProductId()) + ":" + d.GetSerial()
		devs.sub = append(devs.sub, field{label: d.GetName(), value: d.GetState() + ", " + d.GetBus() + " " + id, sub: []field{
			kv(prefix+"name", "", d.GetName()),
			kv(prefix+"state", "", d.GetState()),
			kv(prefix+"bus", "", d.GetBus()),
			kv(prefix+"vendor_id", "", d.GetVendorId()),
			kv(prefix+"product_id", "", d.GetProductId()),
			kv(prefix+"serial", "", d.GetSerial()),
			kv(prefix+"model", "Model", d.GetModel()),
			{key: prefix + "size_bytes", label: "Size", value: humanBytes(d.GetSizeBytes()), raw: strconv.FormatUint(d.GetSizeBytes(), 10)},
			kv(prefix+"partitions", "Partitions", strings.Join(d.GetPartitions(), " ")),
			kv(prefix+"reason", "Removable because", d.GetReason()),
			kv(prefix+"detail", "Enforcement", d.GetDetail()),
			inv.timeField(prefix+"attached_at", "Attached", d.GetAttachedAt()),
		}})
	}
	f.sub = append(f.sub, devs)
	if len(m.GetExemptions()) > 0 {
		ex := field{label: "Exemptions"}
		for i, e := range m.GetExemptions() {
			prefix := fmt.Sprintf("posture.media.exemptions.%d.", i)
			left := longDuration(time.Duration(e.GetRemainingSeconds()) * time.Second)
			ex.sub = append(ex.sub, field{label: e.GetId(), value: e.GetState() + ", " + exemption.FormatDevice(e.GetDevice()) + ", " + left + " left", sub: []field{
				kv(prefix+"id", "", e.GetId()),
				kv(prefix+"device", "", exemption.FormatDevice(e.GetDevice())),
				kv(prefix+"source", "Source", e.GetSource()),
				kv(prefix+"state", "", e.GetState()),
				inv.timeField(prefix+"not_after", "Until", e.GetNotAfter()),
				kv(prefix+"remaining_seconds", "", strconv.FormatUint(uint64(e.GetRemainingSeconds()), 10)),
				kv(prefix+"devices", "Devices", strings.Join(e.GetDevices(), " ")),
				kv(prefix+"detail", "Detail", e.GetDetail()),
			}})
		}
		f.sub = append(f.sub, ex)
	}
	return f
}

// usbInterfaceText is "mass-storage (08/06/50)": class name, then class,
// subclass and protocol in hex.
func usbInterfaceText(in *mnguardv1.UsbInterface) string {
	name := in.GetClassName()
	if name == "" {
		name = "class"
	}
	return fmt.Sprintf("%s (%02x/%02x/%02x)", name, in.GetClass(), in.GetSubclass(), in.GetProtocol())
}

func orUnknown(s string) string {
	if s == "" {
		return "????"
	}
	return s
}

func terminalsRevoke(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	id := inv.args[0]
	resp, _, err := request(ctx, inv, "revoke terminal "+id, mnguardv1.AdminServiceClient.RevokeTerminal,
		&mnguardv1.RevokeTerminalRequest{Id: id, Reason: inv.opts.reason.v})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		ts := []*mnguardv1.Terminal{resp.GetTerminal()}
		return writeList(w, inv.format, inv.terminalColumns(ts), ts)
	}
	t := resp.GetTerminal()
	what := t.GetId()
	if t.GetId() == "" {
		what = id
	}
	if h := t.GetHost().GetHostname(); h != "" {
		what += " (" + h + ")"
	}
	fmt.Fprintf(w, "revoked terminal %s: it must enroll again to report\n", sanitize(what))
	return nil
}

// tokenRequest validates the flags of tokens create.
func tokenRequest(o *options) (*mnguardv1.CreateEnrollmentTokenRequest, error) {
	ttl := defaultTokenTTL
	if o.ttl.set {
		d, err := parseTTL("tokens create", o.ttl.v)
		if err != nil {
			return nil, err
		}
		ttl = d
	}
	uses := uint64(1)
	if o.uses.set {
		n, err := strconv.ParseUint(o.uses.v, 10, 32)
		if err != nil || n < 1 {
			return nil, usagef("tokens create: invalid --uses %q: want a whole number, at least 1", o.uses.v)
		}
		uses = n
	}
	return &mnguardv1.CreateEnrollmentTokenRequest{
		TtlSeconds: uint32(ttl / time.Second),
		Uses:       uint32(uses),
		Note:       o.note.v,
	}, nil
}

func tokensCreate(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req, err := tokenRequest(inv.opts)
	if err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "create enrollment token", mnguardv1.AdminServiceClient.CreateEnrollmentToken, req)
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		type T = *mnguardv1.CreateEnrollmentTokenResponse
		return writeList(w, inv.format, []column[T]{
			{"", "token", nil, func(t T) string { return t.GetToken() }},
			{"", "id", nil, func(t T) string { return t.GetId() }},
			{"", "expires_at", nil, func(t T) string { return inv.timeText(t.GetExpiresAt()) }},
			{"", "uses", nil, func(t T) string { return strconv.FormatUint(uint64(t.GetUses()), 10) }},
		}, []T{resp})
	}
	// The bare token first, alone on its line, to copy or pipe.
	fmt.Fprintln(w, sanitize(resp.GetToken()))
	fmt.Fprintf(w, "expires %s, %s\n", inv.timeRel(resp.GetExpiresAt()), plural(uint64(resp.GetUses()), "use", "uses"))
	fmt.Fprintf(w, "id %s; the token itself is not shown again\n", sanitize(resp.GetId()))
	return nil
}

func tokensList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req := &mnguardv1.ListEnrollmentTokensRequest{}
	toks, _, err := collectPages(ctx, inv, "list enrollment tokens", mnguardv1.AdminServiceClient.ListEnrollmentTokens, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListEnrollmentTokensResponse).GetNextPageToken, (*mnguardv1.ListEnrollmentTokensResponse).GetTokens, 0)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListEnrollmentTokensResponse{Tokens: toks}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	type T = *mnguardv1.EnrollmentToken
	u := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	return writeList(w, inv.format, []column[T]{
		{"ID", "id", func(t T) string { return t.GetId() }, nil},
		{"CREATED", "created_at", func(t T) string { return inv.timeText(t.GetCreatedAt()) }, nil},
		{"EXPIRES", "expires_at", func(t T) string { return inv.timeText(t.GetExpiresAt()) }, nil},
		{"USES LEFT", "", func(t T) string { return u(t.GetUsesLeft()) + " of " + u(t.GetUses()) }, nil},
		{"", "uses", nil, func(t T) string { return u(t.GetUses()) }},
		{"", "uses_left", nil, func(t T) string { return u(t.GetUsesLeft()) }},
		{"STATUS", "status", func(t T) string { return inv.tokenStatus(t) }, nil},
		{"CREATED BY", "created_by", func(t T) string { return t.GetCreatedBy() }, nil},
		{"NOTE", "note", func(t T) string { return t.GetNote() }, nil},
	}, resp.GetTokens())
}

func (inv *invocation) tokenStatus(t *mnguardv1.EnrollmentToken) string {
	switch {
	case t.GetExpiresAt() != nil && !inv.now().Before(t.GetExpiresAt().AsTime()):
		return "expired"
	case t.GetUsesLeft() == 0:
		return "used up"
	}
	return "valid"
}

// eventTypeRE matches an event type (media.attached) or a prefix of types
// ending in a dot (media.).
var eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.?$`)

// eventsRequest validates the flags of events list.
func eventsRequest(inv *invocation) (*mnguardv1.ListEventsRequest, error) {
	o := inv.opts
	req := &mnguardv1.ListEventsRequest{TerminalId: o.terminal.v, Type: o.eventType.v, Limit: defaultListLimit}
	if o.limit.set {
		n, err := parseCount(inv, "limit", o.limit.v, 1, maxEventLimit)
		if err != nil {
			return nil, err
		}
		req.Limit = uint32(n)
	}
	if t := req.Type; t != "" && (len(t) > maxEventType || !eventTypeRE.MatchString(t)) {
		return nil, usagef("events list: invalid --type %q: want an event type such as media.attached, or a prefix ending in a dot such as media.", t)
	}
	var err error
	if req.Since, req.Until, err = inv.timeRange(); err != nil {
		return nil, err
	}
	return req, nil
}

func eventsList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req, err := eventsRequest(inv)
	if err != nil {
		return err
	}
	limit := int(req.GetLimit())
	req.Limit = 0 // counted here over the pages
	evs, _, err := collectPages(ctx, inv, "list events", mnguardv1.AdminServiceClient.ListEvents, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListEventsResponse).GetNextPageToken, (*mnguardv1.ListEventsResponse).GetEvents, limit)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListEventsResponse{Events: evs}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	type T = *mnguardv1.StoredEvent
	return writeList(w, inv.format, []column[T]{
		{"TIME", "time", func(e T) string { return inv.eventTime(e) }, nil},
		{"TERMINAL", "terminal_id", func(e T) string { return e.GetTerminalId() }, nil},
		{"SEQ", "seq", func(e T) string { return eventSeq(e) }, func(e T) string { return strconv.FormatUint(e.GetEvent().GetSeq(), 10) }},
		{"", "source", nil, func(e T) string { return e.GetSource() }},
		{"TYPE", "type", func(e T) string { return e.GetEvent().GetType() }, nil},
		{"SEVERITY", "severity", func(e T) string { return severityText(e.GetEvent().GetSeverity()) }, nil},
		{"MESSAGE", "message", func(e T) string { return e.GetEvent().GetMessage() }, nil},
		{"", "attributes", nil, func(e T) string { return attributesText(e.GetEvent().GetAttributes()) }},
		{"", "received_at", nil, func(e T) string { return inv.timeText(e.GetReceivedAt()) }},
	}, resp.GetEvents())
}

// eventSeq is the agent's sequence number, or "server" for events the
// collector recorded itself.
func eventSeq(e *mnguardv1.StoredEvent) string {
	if e.GetSource() == "server" {
		return "server"
	}
	return strconv.FormatUint(e.GetEvent().GetSeq(), 10)
}

// eventTime is when the event happened on the terminal, or else when the
// server received it.
func (inv *invocation) eventTime(e *mnguardv1.StoredEvent) string {
	if t := e.GetEvent().GetTime(); t != nil {
		return inv.timeText(t)
	}
	return inv.timeText(e.GetReceivedAt())
}

func severityText(s mnguardv1.Severity) string {
	switch s {
	case mnguardv1.Severity_SEVERITY_INFO:
		return "info"
	case mnguardv1.Severity_SEVERITY_WARNING:
		return "warning"
	case mnguardv1.Severity_SEVERITY_ALERT:
		return "alert"
	}
	return "unknown"
}

// attributesText is the attributes as a JSON object with sorted keys, or ""
// when there are none.
func attributesText(attrs map[string]string) string {
	if len(attrs) == 0 {
		return ""
	}
	b, err := json.Marshal(attrs)
	if err != nil {
		return ""
	}
	return string(b)
}

func caPin(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	var pin string
	if dir := inv.opts.dataDir.v; dir != "" {
		path := filepath.Join(dir, "ca.crt")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CA certificate: %w", err)
		}
		cert, err := pki.ParseCertPEM(b)
		if err != nil {
			return fmt.Errorf("read CA certificate %s: %w", path, err)
		}
		pin = pki.Pin(cert.Raw)
	} else {
		resp, _, err := request(ctx, inv, "get CA pin", mnguardv1.AdminServiceClient.GetServerInfo, &mnguardv1.GetServerInfoRequest{})
		if err != nil {
			return err
		}
		pin = resp.GetCaPin()
	}
	switch inv.format {
	case formatJSON:
		return writeJSON(w, map[string]string{"ca_pin": pin})
	case formatCSV:
		return writeFields(w, inv.format, []field{kv("ca_pin", "CA pin", pin)})
	}
	fmt.Fprintln(w, sanitize(pin))
	return nil
}

func whoami(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	resp, server, err := request(ctx, inv, "whoami", mnguardv1.AdminServiceClient.GetServerInfo, &mnguardv1.GetServerInfoRequest{})
	if err != nil {
		return err
	}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeFields(w, inv.format, []field{
		kv("operator", "Operator", resp.GetOperator()),
		kv("role", "Role", resp.GetRole()),
		kv("server", "Server", server),
		kv("server_version", "Server version", resp.GetVersion()),
		kv("ca_pin", "CA pin", resp.GetCaPin()),
	})
}

func printVersion(_ context.Context, inv *invocation, w *bytes.Buffer) error {
	v := map[string]string{
		"version":    version.Version,
		"go_version": runtime.Version(),
		"platform":   runtime.GOOS + "/" + runtime.GOARCH,
	}
	switch inv.format {
	case formatJSON:
		return writeJSON(w, v)
	case formatCSV:
		return writeFields(w, inv.format, []field{
			kv("version", "", v["version"]),
			kv("go_version", "", v["go_version"]),
			kv("platform", "", v["platform"]),
		})
	}
	fmt.Fprintf(w, "mnguardctl %s (%s, %s)\n", v["version"], v["go_version"], v["platform"])
	return nil
}
