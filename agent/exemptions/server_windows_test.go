package exemptions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// TestControlPipeWindows (run under Wine by 'make wine-test'): the CLI's
// requests over a real named pipe: a challenge, a wrong code refused, the
// helpdesk's code applied, the list; a malformed frame and a client that
// never writes do not stop the server; the pipe's DACL admits only SYSTEM
// and the Administrators; after the end nothing answers.
func TestControlPipeWindows(t *testing.T) {
	e := newEnvAt(t, removableTempDir(t))
	m := e.stickManager()
	pipe := fmt.Sprintf(`\\.\pipe\mnguard-test-%d`, time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	srv := &ControlServer{Path: pipe, Handle: m.Handle, OnListen: func() { close(listening) }}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	defer wg.Wait()
	select {
	case <-listening:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}

	// A client that connects and never writes holds one connection, not
	// the server.
	silent, err := winio.DialPipeContext(ctx, pipe)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	checkPipeDACL(t, silent)

	resp, err := Call(ctx, pipe, Request{Op: OpChallenge, Device: testDevice, DurationSeconds: 3600})
	if err != nil || resp.Challenge == nil || resp.Challenge.Device != testDevice {
		t.Fatalf("challenge: %+v %v", resp, err)
	}
	if _, err := Call(ctx, pipe, Request{Op: OpEnter, Code: wrongCode(t, m)}); err == nil || !strings.Contains(err.Error(), "wrong code") {
		t.Fatalf("wrong code: %v", err)
	}
	resp, err = Call(ctx, pipe, Request{Op: OpEnter, Code: helpdeskCode(t, resp.Challenge.Challenge, testDevice)})
	if err != nil {
		t.Fatal(err)
	}
	ex := resp.Exemption
	if ex == nil || ex.State != StateApplied || len(ex.Devices) != 1 || ex.Devices[0] != "sdb" {
		t.Fatalf("enter: %+v", ex)
	}
	if _, ok := m.Allows(testVID, testPID, testSerial); !ok {
		t.Error("the entered exemption does not allow the device")
	}
	resp, err = Call(ctx, pipe, Request{Op: OpList})
	if err != nil || len(resp.Exemptions) != 1 || resp.Exemptions[0].ID != ex.ID {
		t.Fatalf("list: %+v %v", resp, err)
	}

	// A malformed frame gets no answer but does not stop the server.
	c, err := winio.DialPipeContext(ctx, pipe)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0xff, 0xff, 0xff, 0xff})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("an oversized frame was answered (%d bytes)", n)
	}
	c.Close()
	if _, err := Call(ctx, pipe, Request{Op: "bogus"}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("bogus op: %v", err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ccancel()
	if _, err := Call(cctx, pipe, Request{Op: OpList}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Call after the end = %v, want ErrNotRunning", err)
	}
}

// checkPipeDACL reads the security descriptor of the pipe through a client
// handle and checks that it grants access to SYSTEM and the Administrators
// only, without inheritance.
func checkPipeDACL(t *testing.T, conn any) {
	t.Helper()
	fd, ok := conn.(interface{ Fd() uintptr })
	if !ok {
		t.Fatalf("%T has no handle", conn)
	}
	sd, err := windows.GetSecurityInfo(windows.Handle(fd.Fd()), windows.SE_KERNEL_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatalf("GetSecurityInfo on the pipe: %v", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil {
		t.Fatalf("pipe DACL: %v (nil %v)", err, dacl == nil)
	}
	control, _, err := sd.Control()
	if err != nil {
		t.Fatal(err)
	}
	if control&windows.SE_DACL_PROTECTED == 0 {
		t.Errorf("pipe DACL is not protected from inheritance: control %#x", control)
	}
	system, _ := windows.CreateWellKnownSid(windows.WinLocalSystemSid)
	admins, _ := windows.CreateWellKnownSid(windows.WinBuiltinAdministratorsSid)
	var got []string
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatal(err)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || !(sid.Equals(system) || sid.Equals(admins)) {
			t.Errorf("pipe DACL grants %s (ACE type %d)", sid, ace.Header.AceType)
		}
		got = append(got, sid.String())
	}
	if len(got) != 2 {
		t.Errorf("pipe DACL entries %v, want SYSTEM and Administrators", got)
	}
}

// removableTempDir is t.TempDir for Wine: Go's os.RemoveAll deletes through
// a call Wine 8 lacks ("Invalid function"), while os.Remove works; so the
// files are removed one by one, deepest first.
func removableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mnguard-exemptions-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var paths []string
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			if err == nil {
				paths = append(paths, p)
			}
			return nil
		})
		for i := len(paths) - 1; i >= 0; i-- {
			if err := os.Remove(paths[i]); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return dir
}

// TestControlPipeSilentClientsWindows (under Wine by 'make wine-test'):
// clients that open the pipe and never write, twice as many as are served at
// once, are dropped after controlRequestTimeout, so the CLI's call waits at
// most about that long (it waited 10 s per silent client before).
func TestControlPipeSilentClientsWindows(t *testing.T) {
	e := newEnvAt(t, removableTempDir(t))
	m := e.manager()
	pipe := fmt.Sprintf(`\\.\pipe\mnguard-test-silent-%d`, time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- (&ControlServer{Path: pipe, Handle: m.Handle, OnListen: func() { close(listening) }}).Serve(ctx)
	}()
	select {
	case <-listening:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	start := time.Now()
	var silent []net.Conn
	for range 2 * maxControlConns {
		dctx, dcancel := context.WithTimeout(ctx, 4*controlRequestTimeout)
		c, err := winio.DialPipeContext(dctx, pipe)
		dcancel()
		if err != nil {
			t.Fatalf("silent client %d: %v", len(silent)+1, err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	if _, err := Call(ctx, pipe, Request{Op: OpList}); err != nil {
		t.Fatalf("list behind silent clients: %v", err)
	}
	if d := time.Since(start); d > 3*controlRequestTimeout+time.Second {
		t.Errorf("list answered %v after %d silent clients connected, want within about %v", d, len(silent), 2*controlRequestTimeout)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
