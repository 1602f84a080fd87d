// Package posture assembles the terminal's posture snapshot.
package posture

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/mem"
	psnet "github.com/shirou/gopsutil/v3/net"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// USBLister lists the devices on the terminal's USB buses.
//
// ListUSB may return devices together with a non-nil error when the
// inventory is incomplete; the collector keeps the devices and reports the
// error in the posture's usb_inventory_error.
type USBLister interface {
	ListUSB(ctx context.Context) ([]*mnguardv1.UsbDevice, error)
}

// DefaultUSBLister returns the platform's USB lister: sysfs on Linux (the
// kernel's copies of the descriptors and strings), SetupAPI on Windows, and
// elsewhere a lister whose error wraps errors.ErrUnsupported. The returned
// lister is shared and safe for concurrent use.
func DefaultUSBLister() USBLister { return platformUSB() }

var platformUSB = sync.OnceValue(newPlatformUSBLister)

// bootTimeJitter is how far two boot times read from the OS may differ and
// still be taken for the same boot. Windows derives the boot time from the
// current time and the tick count, Linux's btime moves with clock slew; both
// wander by a second or so between reads.
const bootTimeJitter = 2 * time.Second

// A Collector gathers posture snapshots. Its exported fields are read on
// every call and must not change while Collect runs. The zero value is ready
// to use. A Collector must not be copied after first use.
type Collector struct {
	// AgentVersion is reported in the snapshot and its host facts.
	AgentVersion string
	// PolicyVersion returns the version of the policy in force; nil reports
	// an empty policy version.
	PolicyVersion func() string
	// USB lists USB devices; nil uses DefaultUSBLister.
	USB USBLister
	// Now returns the current time; nil uses time.Now.
	Now func() time.Time
	// Logger receives partial collection failures: a warning when a source
	// starts failing or fails differently, an info message when it
	// recovers, so a persistent failure is logged once, not every
	// snapshot. Nil discards them.
	Logger *slog.Logger

	mu       sync.Mutex
	cpuModel string            // cached: the CPU model does not change while we run
	bootTime time.Time         // last boot time reported, to absorb jitter
	failing  map[string]string // source → error text of the previous collection
	// platform caches host.PlatformInformation under platformKey: on
	// Debian gopsutil runs lsb_release (a shell script and five more
	// processes) to find it.
	platform    [2]string
	platformKey string
}

// Collect returns a snapshot of the terminal's posture.
//
// Collection is best effort: every source (host facts, CPU, memory, network
// interfaces, USB) is read independently, and a source that fails leaves its
// fields empty and is logged to c.Logger. A failed USB inventory is also
// recorded in the snapshot's usb_inventory_error, because the server must
// be able to tell "no devices" from "could not look". Collect returns an
// error only when ctx is done or when none of host facts, CPU, memory and
// network interfaces could be read, so that a snapshot saying nothing about
// the machine is never reported as its posture.
//
// Interfaces and their addresses and flags, USB devices and their
// interfaces are sorted, so that equal states produce equal snapshots (see
// Fingerprint). Strings that are not valid UTF-8 are repaired, so the
// snapshot always marshals.
func (c *Collector) Collect(ctx context.Context) (*mnguardv1.Posture, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("posture: collect: %w", err)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	p := &mnguardv1.Posture{
		CollectedAt:  timestamppb.New(now()),
		AgentVersion: c.AgentVersion,
	}
	if c.PolicyVersion != nil {
		p.PolicyVersion = c.PolicyVersion()
	}

	var errs []error
	failing := map[string]string{}
	fail := func(what string, err error) {
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
		failing[what] = err.Error()
	}
	useful := false

	hf, herr := hostFacts(ctx, c.AgentVersion, c.platformInfo)
	if herr != nil {
		fail("host facts", herr)
	}
	if hf.facts.GetHostname() != "" {
		useful = true
	}
	p.Host = hf.facts
	if bt, ok := c.stableBootTime(hf.bootTime); ok {
		p.BootTime = timestamppb.New(bt)
	}
	p.UptimeSeconds = hf.uptime

	if n, err := cpu.CountsWithContext(ctx, true); err != nil {
		fail("cpu count", err)
	} else if n > 0 {
		p.CpuCount = uint32(n)
		useful = true
	}
	if model, err := c.cpuModelName(ctx); err != nil {
		fail("cpu model", err)
	} else {
		p.CpuModel = model
	}

	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		fail("memory", err)
	} else if vm != nil && vm.Total > 0 {
		p.MemoryTotalBytes = vm.Total
		useful = true
	}

	if ifs, err := networkInterfaces(ctx); err != nil {
		fail("network interfaces", err)
	} else {
		p.Interfaces = ifs
		useful = true
	}

	lister := c.USB
	if lister == nil {
		lister = DefaultUSBLister()
	}
	devs, uerr := lister.ListUSB(ctx)
	p.UsbDevices = normalizeUSB(devs)
	if uerr != nil {
		p.UsbInventoryError = uerr.Error()
		fail("usb inventory", uerr)
	}

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("posture: collect: %w", err)
	}
	c.logFailures(ctx, failing)
	if !useful {
		return nil, fmt.Errorf("posture: collect: nothing could be read: %w", errors.Join(errs...))
	}
	sanitizeUTF8(p.ProtoReflect())
	return p, nil
}

func (c *Collector) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// logFailures logs the sources whose failure is new or changed since the
// previous collection, and those that recovered.
func (c *Collector) logFailures(ctx context.Context, failing map[string]string) {
	c.mu.Lock()
	prev := c.failing
	c.failing = failing
	c.mu.Unlock()
	log := c.logger()
	for _, src := range slices.Sorted(maps.Keys(failing)) {
		if prev[src] != failing[src] {
			log.LogAttrs(ctx, slog.LevelWarn, "posture: source failed",
				slog.String("source", src), slog.String("error", failing[src]))
		}
	}
	for _, src := range slices.Sorted(maps.Keys(prev)) {
		if _, ok := failing[src]; !ok {
			log.LogAttrs(ctx, slog.LevelInfo, "posture: source recovered", slog.String("source", src))
		}
	}
}

// stableBootTime returns the boot time to report for bt, the boot time just
// read: the previously reported one when bt is within bootTimeJitter of it.
func (c *Collector) stableBootTime(bt time.Time) (time.Time, bool) {
	if bt.IsZero() {
		return time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.bootTime.IsZero() {
		d := bt.Sub(c.bootTime)
		if d >= -bootTimeJitter && d <= bootTimeJitter {
			return c.bootTime, true
		}
	}
	c.bootTime = bt
	return bt, true
}

// cpuModelName returns the model name of the first CPU, reading it once:
// cpu.Info goes through WMI on Windows, which is slow.
func (c *Collector) cpuModelName(ctx context.Context) (string, error) {
	c.mu.Lock()
	model := c.cpuModel
	c.mu.Unlock()
	if model != "" {
		return model, nil
	}
	infos, err := cpu.InfoWithContext(ctx)
	if err != nil {
		return "", err
	}
	for _, in := range infos {
		if m := strings.TrimSpace(in.ModelName); m != "" {
			model = m
			break
		}
	}
	if model != "" {
		c.mu.Lock()
		c.cpuModel = model
		c.mu.Unlock()
	}
	return model, nil
}

func readPlatform(ctx context.Context) (platform, version string, err error) {
	platform, _, version, err = host.PlatformInformationWithContext(ctx)
	return platform, version, err
}

// platformInfo is readPlatform, read again only when a file it comes from
// changed (on Linux; elsewhere every time).
func (c *Collector) platformInfo(ctx context.Context) (string, string, error) {
	key, ok := platformKey()
	if ok {
		c.mu.Lock()
		hit, p := c.platformKey == key, c.platform
		c.mu.Unlock()
		if hit {
			return p[0], p[1], nil
		}
	}
	platform, version, err := readPlatform(ctx)
	if ok && err == nil {
		c.mu.Lock()
		c.platformKey, c.platform = key, [2]string{platform, version}
		c.mu.Unlock()
	}
	return platform, version, err
}

// releaseFiles are the files gopsutil reads (or whose presence it tests)
// to name the Linux distribution and its version, and lsb_release's.
var releaseFiles = []string{
	"/etc/lsb-release", "/etc/os-release", "/usr/lib/os-release", "/etc/debian_version",
	"/etc/redhat-release", "/etc/system-release", "/etc/centos-release", "/etc/fedora-release",
	"/etc/oracle-release", "/etc/enterprise-release", "/etc/SuSE-release", "/etc/alpine-release",
	"/etc/arch-release", "/etc/gentoo-release", "/etc/slackware-version", "/etc/rocky-release",
	"/etc/almalinux-release", "/usr/bin/lsb_release",
}

// platformKey sums up the release files' sizes and modification times: a
// new key means the platform must be read again. ok is false off Linux.
func platformKey() (key string, ok bool) {
	if runtime.GOOS != "linux" {
		return "", false
	}
	var b strings.Builder
	for _, f := range releaseFiles {
		// Stat follows /etc/os-release's symlink to the file.
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String(), true
}

// HostFacts returns the host facts an agent sends at enrollment. Facts that
// cannot be read are left empty; HostFacts returns an error only when the
// hostname cannot be determined.
func HostFacts(ctx context.Context, agentVersion string) (*mnguardv1.HostFacts, error) {
	hf, err := hostFacts(ctx, agentVersion, readPlatform)
	if hf.facts.GetHostname() == "" {
		if err == nil {
			err = errors.New("empty hostname")
		}
		return nil, fmt.Errorf("posture: host facts: %w", err)
	}
	sanitizeUTF8(hf.facts.ProtoReflect())
	return hf.facts, nil
}

type hostInfo struct {
	facts    *mnguardv1.HostFacts // never nil
	bootTime time.Time            // zero when unknown
	uptime   uint64
}

// hostFacts reads the host facts one by one rather than through
// host.InfoWithContext, which gives up on the first failing part and also
// counts processes and probes virtualization, neither of which we report.
func hostFacts(ctx context.Context, agentVersion string, platform func(context.Context) (string, string, error)) (hostInfo, error) {
	hi := hostInfo{facts: &mnguardv1.HostFacts{
		Os:           runtime.GOOS,
		AgentVersion: agentVersion,
	}}
	f := hi.facts
	var errs []error
	var err error
	if f.Hostname, err = os.Hostname(); err != nil {
		errs = append(errs, fmt.Errorf("hostname: %w", err))
	}
	if f.Platform, f.PlatformVersion, err = platform(ctx); err != nil {
		errs = append(errs, fmt.Errorf("platform: %w", err))
	}
	if f.KernelVersion, err = host.KernelVersionWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kernel version: %w", err))
	}
	if f.Arch, err = host.KernelArch(); err != nil {
		errs = append(errs, fmt.Errorf("kernel arch: %w", err))
	}
	if f.MachineId, err = machineID(ctx); err != nil {
		errs = append(errs, fmt.Errorf("machine id: %w", err))
	}
	if bt, err := host.BootTimeWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("boot time: %w", err))
	} else if bt > 0 {
		hi.bootTime = time.Unix(int64(bt), 0).UTC()
	}
	if hi.uptime, err = host.UptimeWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("uptime: %w", err))
	}
	return hi, errors.Join(errs...)
}

// machineID returns gopsutil's host ID (the DMI product UUID or
// /etc/machine-id on Linux, MachineGuid on Windows). On Linux gopsutil falls
// back to the kernel's boot ID, which changes at every boot; that is not a
// machine identifier, so it is dropped.
func machineID(ctx context.Context) (string, error) {
	id, err := host.HostIDWithContext(ctx)
	if err != nil {
		return "", err
	}
	id = strings.TrimSpace(id)
	if runtime.GOOS == "linux" && id != "" {
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil &&
			strings.EqualFold(strings.TrimSpace(string(b)), id) {
			return "", nil
		}
	}
	return id, nil
}

func networkInterfaces(ctx context.Context) ([]*mnguardv1.NetworkInterface, error) {
	stats, err := psnet.InterfacesWithContext(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*mnguardv1.NetworkInterface, 0, len(stats))
	for _, s := range stats {
		ni := &mnguardv1.NetworkInterface{
			Name:         validUTF8(s.Name),
			HardwareAddr: validUTF8(s.HardwareAddr),
		}
		if s.MTU > 0 && s.MTU <= math.MaxUint32 {
			ni.Mtu = uint32(s.MTU)
		}
		for _, a := range s.Addrs {
			ni.Addrs = append(ni.Addrs, validUTF8(a.Addr))
		}
		for _, f := range s.Flags {
			ni.Flags = append(ni.Flags, validUTF8(f))
		}
		slices.Sort(ni.Addrs)
		slices.Sort(ni.Flags)
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b *mnguardv1.NetworkInterface) int {
		return cmp.Or(
			strings.Compare(a.Name, b.Name),
			strings.Compare(a.HardwareAddr, b.HardwareAddr),
		)
	})
	return out, nil
}

// normalizeUSB returns copies of devs without nils, with class names filled
// in, interfaces deduplicated and everything in a deterministic order.
func normalizeUSB(devs []*mnguardv1.UsbDevice) []*mnguardv1.UsbDevice {
	out := make([]*mnguardv1.UsbDevice, 0, len(devs))
	for _, d := range devs {
		if d == nil {
			continue
		}
		orig := d
		d = proto.Clone(orig).(*mnguardv1.UsbDevice)
		sanitizeUTF8(d.ProtoReflect())
		ifs := make([]*mnguardv1.UsbInterface, 0, len(d.Interfaces))
		for i, in := range d.Interfaces {
			// Clone turns a nil element into an empty message; drop it.
			if i >= len(orig.Interfaces) || orig.Interfaces[i] == nil {
				continue
			}
			if in.ClassName == "" {
				in.ClassName = USBClassName(in.Class)
			}
			ifs = append(ifs, in)
		}
		slices.SortFunc(ifs, compareUSBInterface)
		d.Interfaces = slices.CompactFunc(ifs, func(a, b *mnguardv1.UsbInterface) bool {
			return compareUSBInterface(a, b) == 0
		})
		out = append(out, d)
	}
	slices.SortFunc(out, compareUSBDevice)
	if len(out) == 0 {
		return nil
	}
	return out
}

func compareUSBInterface(a, b *mnguardv1.UsbInterface) int {
	return cmp.Or(
		cmp.Compare(a.Number, b.Number),
		cmp.Compare(a.Class, b.Class),
		cmp.Compare(a.Subclass, b.Subclass),
		cmp.Compare(a.Protocol, b.Protocol),
		strings.Compare(a.ClassName, b.ClassName),
	)
}

func compareUSBDevice(a, b *mnguardv1.UsbDevice) int {
	if c := cmp.Or(
		cmp.Compare(a.Bus, b.Bus),
		cmp.Compare(a.Address, b.Address),
		strings.Compare(a.VendorId, b.VendorId),
		strings.Compare(a.ProductId, b.ProductId),
		strings.Compare(a.Serial, b.Serial),
		strings.Compare(a.Manufacturer, b.Manufacturer),
		strings.Compare(a.Product, b.Product),
		cmp.Compare(a.DeviceClass, b.DeviceClass),
	); c != 0 {
		return c
	}
	// Same identity (e.g. two sticks of one model without serials on
	// Windows, where bus and address are unknown): order by the rest.
	ab, _ := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	bb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(b)
	return bytes.Compare(ab, bb)
}
