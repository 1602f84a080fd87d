package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ueventRcvBuf is the receive buffer asked for: a burst of uevents (a USB
// hub with many devices, a rescan) must not overflow it while f runs.
const ueventRcvBuf = 8 << 20

// WatchUevents calls f for every kernel uevent about a block or usb device
// until ctx ends, then returns nil. It listens on a NETLINK_KOBJECT_UEVENT
// socket (multicast group 1) and takes only messages the kernel sent.
//
// f runs on the receiving goroutine: while it runs, uevents queue in the
// socket. When the queue overflowed and the kernel dropped uevents, f gets
// a Notification with Action ActionOverflow, and the caller must rescan.
// Malformed messages and messages not from the kernel are skipped and
// logged on log, which may be nil. Received is set when the message is
// read from the socket.
//
// It returns an error when the socket cannot be set up or read.
func WatchUevents(ctx context.Context, f func(Notification), log *slog.Logger) error {
	return watchUevents(ctx, f, log, ueventTest{})
}

// ueventTest is what tests change in WatchUevents.
type ueventTest struct {
	ready  func() // called once the socket is bound: the test's uevents will be seen
	rcvBuf int    // receive buffer size instead of ueventRcvBuf, to provoke overflows
}

func watchUevents(ctx context.Context, f func(Notification), log *slog.Logger, test ueventTest) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	// A non-blocking descriptor goes to the runtime's poller, so a read
	// deadline can end a blocked read when ctx ends.
	sock := os.NewFile(uintptr(fd), "uevent")
	defer sock.Close()
	if test.rcvBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, test.rcvBuf); err != nil {
			return fmt.Errorf("uevent socket: SO_RCVBUF: %w", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ueventRcvBuf); err != nil {
		// Without CAP_NET_ADMIN: capped at net.core.rmem_max.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, ueventRcvBuf); err != nil {
			log.Warn("uevent socket: cannot enlarge the receive buffer", "err", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		return fmt.Errorf("uevent socket: bind: %w", err)
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	if err := sock.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("uevent socket: not pollable: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { sock.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if test.ready != nil {
		test.ready()
	}

	// Larger than any message ParseUevent accepts, so that a longer one is
	// seen as too long rather than cut.
	buf := make([]byte, 2*maxUevent)
	for {
		var (
			n, flags int
			from     unix.Sockaddr
			rerr     error
		)
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, _, flags, from, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN
				}
			}
		})
		received := time.Now()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = rerr
		}
		switch {
		case errors.Is(err, unix.ENOBUFS):
			log.Warn("uevent socket overflowed: uevents were lost, rescanning")
			f(Notification{Action: ActionOverflow, Received: received})
			continue
		case err != nil:
			return fmt.Errorf("receive uevent: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			log.Warn("uevent not from the kernel: ignored", "sender", sender(from), "len", n)
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			log.Warn("uevent too long: ignored", "len", n)
			continue
		}
		note, _, err := ParseUevent(buf[:n])
		if err != nil {
			log.Warn("malformed uevent: ignored", "err", err, "len", n)
			continue
		}
		if note.Subsystem != "block" && note.Subsystem != "usb" {
			continue
		}
		note.Received = received
		f(note)
	}
}

// sender describes where a netlink message came from, for the log.
func sender(sa unix.Sockaddr) string {
	if nl, ok := sa.(*unix.SockaddrNetlink); ok {
		return fmt.Sprintf("netlink port %d", nl.Pid)
	}
	return fmt.Sprintf("%T", sa)
}
