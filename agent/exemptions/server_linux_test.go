//go:build linux

package exemptions

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestControlSocket: the CLI's requests over the real socket: a challenge,
// the helpdesk's code applied at once (Apply ran before the answer), the
// list; a refused code is an error; the socket is 0600 and goes at the end.
func TestControlSocket(t *testing.T) {
	e := newEnv(t)
	m := e.stickManager()
	sock := filepath.Join(e.dir, SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	srv := &ControlServer{Path: sock, Handle: m.Handle, OnListen: func() { close(listening) }}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() { m.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	}()
	<-listening
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode(), err)
	}

	resp, err := Call(ctx, sock, Request{Op: OpChallenge, Device: testDevice, DurationSeconds: 3600})
	if err != nil || resp.Challenge == nil || resp.Challenge.Device != testDevice {
		t.Fatalf("challenge: %+v %v", resp, err)
	}
	if _, err := Call(ctx, sock, Request{Op: OpEnter, Code: wrongCode(t, m)}); err == nil || !strings.Contains(err.Error(), "wrong code") {
		t.Fatalf("wrong code: %v", err)
	}
	start := time.Now()
	resp, err = Call(ctx, sock, Request{Op: OpEnter, Code: helpdeskCode(t, resp.Challenge.Challenge, testDevice)})
	if err != nil {
		t.Fatal(err)
	}
	ex := resp.Exemption
	if ex == nil || ex.State != StateApplied || len(ex.Devices) != 1 || ex.Devices[0] != "sdb" || ex.RemainingSeconds != 3600 {
		t.Fatalf("enter: %+v", ex)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("enter to writable took %v", d)
	}
	resp, err = Call(ctx, sock, Request{Op: OpList})
	if err != nil || len(resp.Exemptions) != 1 || resp.Exemptions[0].ID != ex.ID {
		t.Fatalf("list: %+v %v", resp, err)
	}

	// A malformed frame gets no answer but does not stop the server.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0xff, 0xff, 0xff, 0xff})
	c.Close()
	if _, err := Call(ctx, sock, Request{Op: "bogus"}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("bogus op: %v", err)
	}
}

// TestCallNotRunning: without the agent the CLI says so.
func TestCallNotRunning(t *testing.T) {
	_, err := Call(context.Background(), filepath.Join(t.TempDir(), SocketName), Request{Op: OpList})
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Call without an agent: %v, want %v", err, ErrNotRunning)
	}
}

// TestSecondServerRefused: a second agent on the same state directory does
// not take over the socket.
func TestSecondServerRefused(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	sock := filepath.Join(e.dir, SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- (&ControlServer{Path: sock, Handle: m.Handle, OnListen: func() { close(listening) }}).Serve(ctx)
	}()
	<-listening
	err := (&ControlServer{Path: sock, Handle: m.Handle}).Serve(ctx)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestControlSocketSilentClients: clients that connect and never write (twice
// as many as the server serves at once) are dropped after
// controlRequestTimeout, so the CLI's call waits at most about that long, not
// the 10 s the whole exchange may take.
func TestControlSocketSilentClients(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	sock := filepath.Join(e.dir, SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- (&ControlServer{Path: sock, Handle: m.Handle, OnListen: func() { close(listening) }}).Serve(ctx)
	}()
	<-listening
	var silent []net.Conn
	for range 2 * maxControlConns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	start := time.Now()
	if _, err := Call(ctx, sock, Request{Op: OpList}); err != nil {
		t.Fatalf("list behind silent clients: %v", err)
	}
	if d := time.Since(start); d > 2*controlRequestTimeout+time.Second {
		t.Errorf("list answered after %v behind %d silent clients, want within about %v", d, len(silent), 2*controlRequestTimeout)
	}
	silent[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent client: %v, want dropped (EOF)", err)
	}
	if d := time.Since(start); d > 2*controlRequestTimeout+time.Second {
		t.Errorf("silent client dropped after %v, want about %v", d, controlRequestTimeout)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
