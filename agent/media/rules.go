package media

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Rule files the agent installs on Linux: the fail-closed layers that work
// without the agent running.
const (
	// UdevRuleFile runs the agent's udev hook at add, which sets new
	// removable disks read-only before udisks and desktop automounters hear
	// of them (udevd finishes RUN programs first).
	UdevRuleFile = "60-mnguard-media.rules"
	// UdisksRuleFile makes "ro" the only mount option udisks allows on
	// removable devices (udisks 2.9+ reads these udev properties).
	UdisksRuleFile = "99-mnguard-udisks.rules"
)

// RuleDirs are where udev rules may be installed, in udev's order.
var RuleDirs = []string{"/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d"}

// quoteArg quotes a path for a udev RUN key; udev splits on spaces unless
// the argument is in single quotes.
func quoteArg(s string) string {
	if strings.ContainsAny(s, " \t'\"") {
		return "'" + s + "'"
	}
	return s
}

// UdevRule returns the udev rule that runs "agent udev-hook" for every new
// or changed block device; the hook decides whether the device is removable
// and sets it (and its partitions) read-only. configPath, when not empty,
// is passed to the hook (tests use it for media.treat_as_removable).
func UdevRule(agentPath, configPath string) []byte {
	var b bytes.Buffer
	b.WriteString(`# mnguard: removable disks are read-only from the moment they appear.
# udevd runs RUN programs before it announces the device to udisks and desktop
# automounters, so there is no window in which they are writable, whether or
# not the agent is running. The hook classifies the device itself (USB, MMC,
# Firewire ancestry, removable=1, optical) and leaves other disks alone.
`)
	cfg := ""
	if configPath != "" {
		cfg = " --config " + quoteArg(configPath)
	}
	fmt.Fprintf(&b, "ACTION==\"add|change\", SUBSYSTEM==\"block\", RUN+=\"%s udev-hook%s %%k\"\n", quoteArg(agentPath), cfg)
	b.WriteString(`# Optical drives burn discs through SCSI commands that pass the read-only flag;
# the kernel allows them to a user only on a descriptor opened for writing, so
# only root may open the drive's nodes for writing (no seat ACL either).
SUBSYSTEM=="block", KERNEL=="sr[0-9]*", MODE:="0640", TAG-="uaccess"
SUBSYSTEM=="scsi_generic", ATTRS{type}=="5", MODE:="0640", TAG-="uaccess"
`)
	return b.Bytes()
}

// UdisksRule returns the udev rule that restricts udisks mounts of
// removable devices to read-only.
func UdisksRule() []byte {
	// The general options udisks merges with each filesystem's own allow
	// list (uid, gid, iocharset and so on stay allowed there): the built-in
	// set without rw and exec.
	const allow = "ro,noexec,nosuid,nodev,noatime,nodiratime,relatime,sync,dirsync,noload"
	return []byte(`# mnguard: udisks may mount removable devices read-only and only read-only.
# Second layer behind the kernel's read-only flag that the agent (and its
# udev hook) sets: a desktop's "mount" button cannot ask for rw.
SUBSYSTEM!="block", GOTO="mnguard_udisks_end"
SUBSYSTEMS=="usb|mmc|firewire", GOTO="mnguard_udisks_ro"
KERNEL=="sr[0-9]*", GOTO="mnguard_udisks_ro"
ATTRS{removable}=="1", GOTO="mnguard_udisks_ro"
GOTO="mnguard_udisks_end"
LABEL="mnguard_udisks_ro"
ENV{UDISKS_MOUNT_OPTIONS_DEFAULTS}="ro"
ENV{UDISKS_MOUNT_OPTIONS_ALLOW}="` + allow + `"
LABEL="mnguard_udisks_end"
`)
}

// InstalledLayers says whether the udev hook rule and the udisks rule are
// installed in one of dirs (RuleDirs in production).
func InstalledLayers(dirs []string) (udev, udisks bool) {
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, UdevRuleFile)); err == nil && bytes.Contains(b, []byte(" udev-hook")) {
			udev = true
		}
		if b, err := os.ReadFile(filepath.Join(d, UdisksRuleFile)); err == nil && bytes.Contains(b, []byte(`UDISKS_MOUNT_OPTIONS_DEFAULTS}="ro"`)) {
			udisks = true
		}
	}
	return udev, udisks
}
