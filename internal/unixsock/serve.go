package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// Serve accepts connections on ln (a unix socket, or on Windows a named
// pipe) and runs handle for each in its own
// goroutine, at most maxConns at a time (a further client waits in the
// listen backlog). Running out of file descriptors or buffers is not the
// end: Serve reports it through onBusy, when set, and accepts again after
// a back-off (5 ms doubling to 1 s, as net/http). When ctx ends Serve
// closes ln, waits for the handlers in flight and returns nil; another
// accept error closes ln and is returned after the handlers finished.
// handle owns the connection and must close it.
func Serve(ctx context.Context, ln net.Listener, maxConns int, onBusy func(err error, retry time.Duration), handle func(net.Conn)) error {
	if maxConns < 1 {
		return fmt.Errorf("unixsock.Serve: %d connections at most", maxConns)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()

	sem := make(chan struct{}, maxConns)
	var delay time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-sem
			if err := acceptFailed(ctx, ln, err, &delay, onBusy); err != nil || ctx.Err() != nil {
				return err
			}
			continue
		}
		delay = 0
		wg.Go(func() {
			defer func() { <-sem }()
			handle(conn)
		})
	}
}

// temporary reports whether an accept error may clear by itself.
// acceptFailed handles an accept error of a loop serving ln: nil once ctx
// ended, or after a back-off (5 ms doubling to 1 s, reported to onBusy)
// when err is running out of descriptors or buffers; any other error,
// wrapped, ends the loop.
func acceptFailed(ctx context.Context, ln net.Listener, err error, delay *time.Duration, onBusy func(error, time.Duration)) error {
	if ctx.Err() != nil {
		return nil
	}
	if !temporary(err) {
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	*delay = min(max(2**delay, 5*time.Millisecond), time.Second)
	if onBusy != nil {
		onBusy(err, *delay)
	}
	select {
	case <-time.After(*delay):
	case <-ctx.Done():
	}
	return nil
}

func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
