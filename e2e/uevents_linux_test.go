//go:build linux

package e2e

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// countUevents counts the kernel's uevents until stop is called.
func countUevents(b *testing.B) (n *atomic.Int64, stop func()) {
	n = new(atomic.Int64)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		b.Fatal(err)
	}
	// Wake the blocked read once a second to see stop.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		b.Fatal(err)
	}
	var stopped atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for !stopped.Load() {
			if _, _, err := unix.Recvfrom(fd, buf, 0); err == nil {
				n.Add(1)
			}
		}
	}()
	return n, func() {
		stopped.Store(true)
		<-done
		unix.Close(fd)
	}
}
