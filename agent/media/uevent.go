package media

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ActionOverflow is the Action of the Notification WatchUevents sends when
// the kernel dropped uevents because the socket's receive buffer was full.
// It names no device: the receiver must rescan sysfs.
const ActionOverflow = "overflow"

// maxUevent bounds a kernel uevent message. The kernel's own limit is
// about 2 KiB of variables (UEVENT_BUFFER_SIZE) plus the header.
const maxUevent = 8 << 10

// ParseUevent parses a kernel uevent as received from a
// NETLINK_KOBJECT_UEVENT socket (multicast group 1): an "ACTION@DEVPATH"
// header, then NUL-terminated KEY=VALUE variables. It returns the
// notification (without Received, which is the receiver's to set) and every
// variable. Messages from udev's monitor ("libudev" header, group 2) are
// rejected: only the kernel's messages are trusted.
func ParseUevent(b []byte) (Notification, map[string]string, error) {
	switch {
	case len(b) == 0:
		return Notification{}, nil, errors.New("uevent: empty message")
	case len(b) > maxUevent:
		return Notification{}, nil, fmt.Errorf("uevent: message of %d bytes is longer than %d", len(b), maxUevent)
	case bytes.HasPrefix(b, []byte("libudev")):
		return Notification{}, nil, errors.New("uevent: a udev monitor message (libudev), not a kernel uevent")
	}
	b = bytes.TrimSuffix(b, []byte{0})
	fields := strings.Split(string(b), "\x00")
	hAction, hPath, ok := strings.Cut(fields[0], "@")
	if !ok {
		return Notification{}, nil, fmt.Errorf("uevent: header %s is not ACTION@DEVPATH", clip(fields[0]))
	}
	env := make(map[string]string, len(fields)-1)
	for i, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		switch {
		case f == "":
			return Notification{}, nil, fmt.Errorf("uevent: field %d is empty", i+1)
		case !ok:
			return Notification{}, nil, fmt.Errorf("uevent: field %s has no '='", clip(f))
		case k == "":
			return Notification{}, nil, fmt.Errorf("uevent: field %s has an empty key", clip(f))
		}
		if old, dup := env[k]; dup && core(k) && old != v {
			return Notification{}, nil, fmt.Errorf("uevent: %s given twice, %s and %s", k, clip(old), clip(v))
		}
		env[k] = v
	}
	n := Notification{
		Action:    env["ACTION"],
		DevPath:   env["DEVPATH"],
		Subsystem: env["SUBSYSTEM"],
		DevName:   env["DEVNAME"],
		DevType:   env["DEVTYPE"],
	}
	switch {
	case n.Action == "":
		return Notification{}, nil, errors.New("uevent: no ACTION")
	case n.DevPath == "":
		return Notification{}, nil, errors.New("uevent: no DEVPATH")
	case n.Subsystem == "":
		return Notification{}, nil, errors.New("uevent: no SUBSYSTEM")
	case hAction != n.Action:
		return Notification{}, nil, fmt.Errorf("uevent: header action %s but ACTION=%s", clip(hAction), clip(n.Action))
	case hPath != n.DevPath:
		return Notification{}, nil, fmt.Errorf("uevent: header path %s but DEVPATH=%s", clip(hPath), clip(n.DevPath))
	case !strings.HasPrefix(n.DevPath, "/") || dotDot(n.DevPath):
		return Notification{}, nil, fmt.Errorf("uevent: DEVPATH %s is not a path below /sys", clip(n.DevPath))
	case strings.HasPrefix(n.DevName, "/") || dotDot(n.DevName):
		return Notification{}, nil, fmt.Errorf("uevent: DEVNAME %s is not a name below /dev", clip(n.DevName))
	}
	return n, env, nil
}

// core reports whether a variable fills a Notification field: giving it
// twice, differently, makes the message ambiguous.
func core(k string) bool {
	switch k {
	case "ACTION", "DEVPATH", "SUBSYSTEM", "DEVNAME", "DEVTYPE":
		return true
	}
	return false
}

// dotDot reports whether a slash-separated path has a ".." element.
func dotDot(p string) bool {
	for e := range strings.SplitSeq(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// clip quotes part of a message for an error, cut to a readable length.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
