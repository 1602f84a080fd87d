//go:build linux

package unixsock

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"
)

// PeerLimits bounds the connections ServePeers handles at once, by the uid of
// the peer (SO_PEERCRED). Privileged peers have slots of their own that no
// other uid can take, so that a local user flooding a socket never keeps root
// (login, sshd, gdm) waiting.
type PeerLimits struct {
	// Privileged is how many connections of privileged peers (uid 0, and the
	// uids IsPrivileged names) are handled at once. A privileged client beyond
	// them waits for a slot in its own goroutine, never in the accept loop.
	// At least 1.
	Privileged int
	// PerUID is how many connections of one other uid are handled at once,
	// and Users how many of all other uids together. A connection beyond
	// either is closed at once, unanswered. PerUID 0 refuses every other uid.
	PerUID, Users int
	// IsPrivileged, if set, names further privileged uids (such as the
	// agent's own).
	IsPrivileged func(uid uint32) bool
	// OnRefused, if set, is told of the connections closed unanswered, by
	// uid: at most once a second (the first at once) how many of each uid
	// since the previous time, and the rest when ServePeers returns. A peer
	// whose credentials cannot be read has uid NoUID.
	OnRefused func(uid uint32, refused int)
}

// NoUID stands for a peer whose credentials could not be read.
const NoUID = ^uint32(0)

// ServePeers is Serve for a unix socket with limits by peer (see PeerLimits):
// it accepts connections as fast as they come, reads each peer's uid and
// either runs handle(conn, uid) in a goroutine of its own or closes the
// connection at once; the accept loop never waits for a slot, so connections
// queued by a flooding peer cannot hold back a privileged one for longer than
// it takes to accept and close them. Errors, cancellation and onBusy are as
// for Serve. handle owns the connection and must close it.
func ServePeers(ctx context.Context, ln *net.UnixListener, lim PeerLimits, onBusy func(err error, retry time.Duration), handle func(conn *net.UnixConn, uid uint32)) error {
	if lim.Privileged < 1 || lim.PerUID < 0 || lim.Users < 0 {
		return fmt.Errorf("unixsock.ServePeers: limits %d privileged, %d per uid, %d users", lim.Privileged, lim.PerUID, lim.Users)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()

	privileged := make(chan struct{}, lim.Privileged)
	var mu sync.Mutex
	perUID := make(map[uint32]int)
	users := 0
	release := func(uid uint32) {
		mu.Lock()
		defer mu.Unlock()
		users--
		if perUID[uid]--; perUID[uid] == 0 {
			delete(perUID, uid)
		}
	}
	refused := refusals{report: lim.OnRefused}
	defer refused.flush()

	var delay time.Duration
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if err := acceptFailed(ctx, ln, err, &delay, onBusy); err != nil || ctx.Err() != nil {
				return err
			}
			continue
		}
		delay = 0
		uid, err := PeerUID(conn)
		if err != nil {
			conn.Close()
			refused.note(NoUID)
			continue
		}
		if uid == 0 || lim.IsPrivileged != nil && lim.IsPrivileged(uid) {
			wg.Go(func() {
				select {
				case privileged <- struct{}{}:
				case <-ctx.Done():
					conn.Close()
					return
				}
				defer func() { <-privileged }()
				handle(conn, uid)
			})
			continue
		}
		mu.Lock()
		ok := users < lim.Users && perUID[uid] < lim.PerUID
		if ok {
			users++
			perUID[uid]++
		}
		mu.Unlock()
		if !ok {
			conn.Close()
			refused.note(uid)
			continue
		}
		wg.Go(func() {
			defer release(uid)
			handle(conn, uid)
		})
	}
}

// refusals tells OnRefused of refused connections, by uid, at most once a
// second.
type refusals struct {
	report  func(uid uint32, n int)
	last    time.Time
	pending map[uint32]int
}

func (r *refusals) note(uid uint32) {
	if r.report == nil {
		return
	}
	if r.pending == nil {
		r.pending = make(map[uint32]int)
	}
	r.pending[uid]++
	if now := time.Now(); now.Sub(r.last) >= time.Second {
		r.last = now
		r.flush()
	}
}

func (r *refusals) flush() {
	for _, uid := range slices.Sorted(maps.Keys(r.pending)) {
		r.report(uid, r.pending[uid])
	}
	clear(r.pending)
}
