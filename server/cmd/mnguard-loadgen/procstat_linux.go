//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// readProc returns a process's resident set (bytes) and CPU time used so
// far (user + system), from /proc.
func readProc(pid int) (rss int64, cpu time.Duration, err error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from the last ')'.
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(st[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15, rss 24 (pages).
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	pages, err3 := strconv.ParseInt(f[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad numbers", pid)
	}
	cpu = time.Duration(ut+stt) * time.Second / clockTicks
	return pages * int64(os.Getpagesize()), cpu, nil
}

// listenerPID finds the process listening on addr (HOST:PORT) through
// /proc/net/tcp{,6} and the sockets in /proc/*/fd; 0 when none is found
// or it cannot be read.
func listenerPID(addr string) int {
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return 0
	}
	want, _ := netip.ParseAddr(host)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(f, uint16(port), want, inodes)
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == self {
			continue
		}
		fds, err := os.ReadDir(p + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(p + "/fd/" + fd.Name())
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				return pid
			}
		}
	}
	return 0
}

// listeningInodes adds the inodes of sockets in the LISTEN state on port
// (and on want, or on any address) from a /proc/net/tcp file.
func listeningInodes(path string, port uint16, want netip.Addr, into map[string]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		ipHex, portHex, ok := strings.Cut(fl[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil || uint16(p) != port {
			continue
		}
		ip, ok := procNetAddr(ipHex)
		if !ok || !(ip.IsUnspecified() || !want.IsValid() || ip.Unmap() == want.Unmap()) {
			continue
		}
		into[fl[9]] = true
	}
}

// procNetAddr decodes /proc/net/tcp's address: 32-bit words in host (little
// endian) order.
func procNetAddr(h string) (netip.Addr, bool) {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, false
	}
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	ip, ok := netip.AddrFromSlice(b)
	return ip, ok
}
