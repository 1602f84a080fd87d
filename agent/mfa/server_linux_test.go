//go:build linux

package mfa

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// The helper mode: the test binary re-executed (as another uid) connects to the socket
// in clientSocketEnv, asks for the user in clientUserEnv (a begin request when
// clientBeginEnv is set, else a verify request) and prints the result number.
const (
	clientSocketEnv = "MNGUARD_MFA_TEST_CLIENT_SOCKET"
	clientUserEnv   = "MNGUARD_MFA_TEST_CLIENT_USER"
	clientBeginEnv  = "MNGUARD_MFA_TEST_CLIENT_BEGIN"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(floodSocketEnv); path != "" {
		os.Exit(flood(path))
	}
	if path := os.Getenv(clientSocketEnv); path != "" {
		req := Request{Type: TypeVerify, User: os.Getenv(clientUserEnv), Service: "sshd", Code: "123456"}
		if os.Getenv(clientBeginEnv) != "" {
			req = Request{Type: TypeBegin, User: req.User, Service: "sshd"}
		}
		resp, err := ask(path, req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(uint8(resp.Result))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// ask sends one request and reads the response, as pam_mnguard.so does.
func ask(path string, req Request) (Response, error) {
	p, err := EncodeRequest(req)
	if err != nil {
		return Response{}, err
	}
	return askRaw(path, framed(p))
}

func framed(p []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

// askRaw writes raw bytes, half-closes and reads one response frame.
func askRaw(path string, raw []byte) (Response, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if len(raw) > 0 {
		if _, err := c.Write(raw); err != nil {
			return Response{}, err
		}
	}
	c.(*net.UnixConn).CloseWrite()
	p, err := ReadFrame(c)
	if err != nil {
		return Response{}, err
	}
	return DecodeResponse(p)
}

// fakeVerifier answers by code: "000000" accepted, "111111" rejected, "222222" locked,
// "error" fails, "block" waits for the context; it records every call. Begin answers
// by service: "offline" gives a challenge message, "broken" fails, "slow" waits for
// the context, anything else gives no message.
type fakeVerifier struct {
	mu    sync.Mutex
	calls []Request
}

func (f *fakeVerifier) Begin(ctx context.Context, user, service string) (string, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Request{Type: TypeBegin, User: user, Service: service})
	f.mu.Unlock()
	switch service {
	case "offline":
		return "Offline challenge for " + user + ": 1234-5678.\nAsk the helpdesk.", nil
	case "broken":
		return "", errors.New("no randomness")
	case "slow":
		<-ctx.Done()
		return "", ctx.Err()
	}
	return "", nil
}

func (f *fakeVerifier) Verify(ctx context.Context, user, service, code string) (Result, string, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Request{Type: TypeVerify, User: user, Service: service, Code: code})
	f.mu.Unlock()
	switch code {
	case "000000", "123456":
		return Accepted, "welcome", nil
	case "111111":
		return Rejected, "wrong code", nil
	case "222222":
		return Locked, "account locked, call the helpdesk", nil
	case "333333":
		return Rejected, "you typed 333333", nil // a careless verifier echoing the code
	case "444444":
		return 42, "", nil
	case "block":
		<-ctx.Done()
		return 0, "", ctx.Err()
	}
	return 0, "", errors.New("collector: connection refused")
}

func (f *fakeVerifier) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	path string
	v    *fakeVerifier
	logs *syncBuffer
	done chan error
	stop context.CancelFunc
	once sync.Once
}

// startServer runs a Server on a socket in dir until the test ends and checks that it
// shuts down cleanly.
func startServer(t *testing.T, dir string, mod func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{path: filepath.Join(dir, "run", "pam.sock"), v: &fakeVerifier{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	s := &Server{
		Path:     ts.path,
		Verifier: ts.v,
		Logger:   slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Timeout:  2 * time.Second,
	}
	if mod != nil {
		mod(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.stop = cancel
	go func() { ts.done <- s.Serve(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Stat(ts.path); err == nil && fi.Mode().Perm() == 0o666 {
			break
		}
		select {
		case err := <-ts.done:
			t.Fatalf("Serve: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("socket did not appear")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		ts.shutdown(t)
		if strings.Contains(ts.logs.String(), "123456") || strings.Contains(ts.logs.String(), "S3CR3T") {
			t.Errorf("the log contains a code:\n%s", ts.logs)
		}
	})
	return ts
}

// shutdown cancels the server once and checks that it returns nil and removes the socket.
func (ts *testServer) shutdown(t *testing.T) {
	t.Helper()
	ts.once.Do(func() {
		ts.stop()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after cancellation")
		}
		if _, err := os.Lstat(ts.path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket still there after shutdown: %v", err)
		}
	})
}

func (ts *testServer) mustServe(t *testing.T) {
	t.Helper()
	r, err := ask(ts.path, Request{Type: TypeVerify, User: "root", Service: "login", Code: "000000"})
	if err != nil || r.Result != Accepted {
		t.Fatalf("good request afterwards: %+v, %v", r, err)
	}
}

func TestServeResults(t *testing.T) {
	ts := startServer(t, t.TempDir(), nil)
	for _, tc := range []struct {
		code    string
		want    Result
		wantMsg string
	}{
		{"000000", Accepted, "welcome"},
		{"111111", Rejected, "wrong code"},
		{"222222", Locked, "account locked, call the helpdesk"},
		{"999999", Unavailable, "cannot reach the collector"},
		{"333333", Rejected, ""},
		{"444444", Unavailable, "internal error in the agent"},
		{"ABCD-efgh-1234", Unavailable, "cannot reach the collector"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			r, err := ask(ts.path, Request{Type: TypeVerify, User: "root", Service: "sshd", Code: tc.code})
			if err != nil {
				t.Fatal(err)
			}
			if r.Result != tc.want || r.Message != tc.wantMsg {
				t.Errorf("got %v %q, want %v %q", r.Result, r.Message, tc.want, tc.wantMsg)
			}
		})
	}
	// Root may ask for any user, even one that does not exist here.
	r, err := ask(ts.path, Request{Type: TypeVerify, User: "no-such-user-xyz", Service: "sshd", Code: "000000"})
	if err != nil || r.Result != Accepted {
		t.Errorf("root asking for another user: %+v, %v", r, err)
	}
	if got := ts.v.calls[0]; got != (Request{TypeVerify, "root", "sshd", "000000"}) {
		t.Errorf("verifier got %+v", got)
	}
	logs := ts.logs.String()
	for _, want := range []string{"user=root", "service=sshd", "peer_uid=0", "result=rejected", "result=locked", "result=unavailable"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	for _, code := range []string{"000000", "111111", "ABCD-efgh"} {
		if strings.Contains(logs, code) {
			t.Errorf("log contains code %s", code)
		}
	}
}

// TestServeBegin: a begin request is answered Accepted with the verifier's message,
// cleaned for a terminal, or Unavailable when the verifier fails or takes too long.
func TestServeBegin(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(s *Server) { s.Timeout = 500 * time.Millisecond })
	for _, tc := range []struct {
		service string
		want    Result
		wantMsg string
	}{
		{"sshd", Accepted, ""},
		{"offline", Accepted, "Offline challenge for root: 1234-5678. Ask the helpdesk."},
		{"broken", Unavailable, "internal error in the agent"},
		{"slow", Unavailable, "internal error in the agent"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			start := time.Now()
			r, err := ask(ts.path, Request{Type: TypeBegin, User: "root", Service: tc.service})
			if err != nil {
				t.Fatal(err)
			}
			if r.Result != tc.want || r.Message != tc.wantMsg {
				t.Errorf("got %v %q, want %v %q", r.Result, r.Message, tc.want, tc.wantMsg)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("answered after %v, want within the 500ms timeout", d)
			}
			ts.mustServe(t)
		})
	}
	ts.v.mu.Lock()
	defer ts.v.mu.Unlock()
	if got := ts.v.calls[0]; got != (Request{Type: TypeBegin, User: "root", Service: "sshd"}) {
		t.Errorf("verifier got %+v", got)
	}
}

func TestServeBadInput(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(s *Server) { s.Timeout = 300 * time.Millisecond })
	req := func(version, typ byte, fields ...string) []byte { return framed(rawRequest(version, typ, fields...)) }
	noResponse := Result(255)
	for _, tc := range []struct {
		name string
		raw  []byte
		want Result
	}{
		{"empty frame", nil, noResponse},
		{"length 0", []byte{0, 0, 0, 0}, BadRequest},
		{"length 4097", []byte{0, 0, 0x10, 1}, BadRequest},
		{"length 4097 with payload", append([]byte{0, 0, 0x10, 1}, make([]byte, 4097)...), BadRequest},
		{"truncated header", []byte{0, 0}, BadRequest},
		{"truncated payload", []byte{0, 0, 0, 20, 1, 1, 0}, BadRequest},
		{"version 2", req(2, 1, "root", "sshd", "S3CR3T"), BadRequest},
		{"type 7", req(1, 7, "root", "sshd", "S3CR3T"), BadRequest},
		{"trailing bytes", framed(append(rawRequest(1, 1, "root", "sshd", "S3CR3T"), 0)), BadRequest},
		{"frame shorter than fields", framed(rawRequest(1, 1, "root", "sshd", "S3CR3T")[:12]), BadRequest},
		{"user with control characters", req(1, 1, "ro\x1b[2Jot", "sshd", "S3CR3T"), BadRequest},
		{"10 kB user", req(1, 1, strings.Repeat("u", 10_000), "sshd", "S3CR3T"), BadRequest},
		{"300-byte user", req(1, 1, strings.Repeat("u", 300), "sshd", "S3CR3T"), BadRequest},
		{"service with slash", req(1, 1, "root", "ssh/d", "S3CR3T"), BadRequest},
		{"empty code", req(1, 1, "root", "sshd", ""), BadRequest},
		{"code with non-printables", req(1, 1, "root", "sshd", "S3CR3T\x00\x07"), BadRequest},
		{"overlong code", req(1, 1, "root", "sshd", strings.Repeat("S3CR3T", 20)), BadRequest},
		{"begin with a code", req(1, 2, "root", "sshd", "S3CR3T"), BadRequest},
		{"begin without service", req(1, 2, "root"), BadRequest},
		{"begin with control characters", req(1, 2, "ro\x1b[2Jot", "sshd"), BadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := askRaw(ts.path, tc.raw)
			if tc.want == noResponse {
				if !errors.Is(err, io.EOF) {
					t.Errorf("got %+v, %v; want the connection closed without a response", r, err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if r.Result != tc.want {
				t.Errorf("result %v (%q), want %v", r.Result, r.Message, tc.want)
			} else if strings.Contains(r.Message, "S3CR3T") {
				t.Errorf("message %q contains the code", r.Message)
			}
			ts.mustServe(t)
		})
	}

	t.Run("client closes after two bytes", func(t *testing.T) {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0, 0})
		c.Close()
		ts.mustServe(t)
	})

	t.Run("client never writes", func(t *testing.T) {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("read %d bytes, %v; want EOF when the server drops the client", n, err)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("dropped after %v, want about the 300ms timeout", d)
		}
		ts.mustServe(t)
		if !strings.Contains(ts.logs.String(), "no request in time") {
			t.Errorf("no warning about the silent client:\n%s", ts.logs)
		}
	})
	if n := ts.v.count(); n != 22 {
		t.Errorf("verifier called %d times, want 22 (only the good requests)", n)
	}
}

// TestServePeerCredentials runs the client as another uid (nobody) in a child process:
// it may ask for itself but not for root.
func TestServePeerCredentials(t *testing.T) {
	testenv.RequireRoot(t, "running a client as another uid")
	nobody, err := user.LookupId("65534")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no uid 65534 (nobody) on a Debian machine: %v", err)
		}
		t.Skipf("no uid 65534: %v", err)
	}
	// A world-readable directory: the child must reach the binary and the socket.
	dir, err := os.MkdirTemp("", "mfa-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mfa.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	var deniedMu sync.Mutex
	var denied []Request
	ts := startServer(t, dir, func(s *Server) {
		s.NotPermitted = func(r Request, uid uint32) {
			if uid != 65534 {
				t.Errorf("NotPermitted told uid %d, want 65534", uid)
			}
			deniedMu.Lock()
			denied = append(denied, r)
			deniedMu.Unlock()
		}
	})

	asNobody := func(t *testing.T, name string, begin bool) Result {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Dir = dir
		cmd.Env = []string{clientSocketEnv + "=" + ts.path, clientUserEnv + "=" + name}
		if begin {
			cmd.Env = append(cmd.Env, clientBeginEnv+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as nobody: %v: %s", err, stderr.String())
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("client output %q", out)
		}
		return Result(n)
	}

	for _, begin := range []bool{false, true} {
		if got := asNobody(t, "root", begin); got != NotPermitted {
			t.Errorf("nobody asking for root (begin %v): %v, want %v", begin, got, NotPermitted)
		}
		if got := asNobody(t, "no-such-user-xyz", begin); got != NotPermitted {
			t.Errorf("nobody asking for an unknown user (begin %v): %v, want %v", begin, got, NotPermitted)
		}
	}
	if n := ts.v.count(); n != 0 {
		t.Errorf("verifier called %d times for refused peers", n)
	}
	deniedMu.Lock()
	want := []Request{
		{Type: TypeVerify, User: "root", Service: "sshd"},
		{Type: TypeVerify, User: "no-such-user-xyz", Service: "sshd"},
		{Type: TypeBegin, User: "root", Service: "sshd"},
		{Type: TypeBegin, User: "no-such-user-xyz", Service: "sshd"},
	}
	if fmt.Sprint(denied) != fmt.Sprint(want) {
		t.Errorf("NotPermitted told %+v, want %+v (and never the code)", denied, want)
	}
	deniedMu.Unlock()
	if got := asNobody(t, nobody.Username, false); got != Accepted {
		t.Errorf("nobody asking for itself: %v, want %v", got, Accepted)
	}
	if got := asNobody(t, nobody.Username, true); got != Accepted {
		t.Errorf("nobody beginning its own login: %v, want %v", got, Accepted)
	}
	if !strings.Contains(ts.logs.String(), "peer_uid=65534") || !strings.Contains(ts.logs.String(), "result=\"not permitted\"") {
		t.Errorf("log lacks the refused peer:\n%s", ts.logs)
	}
}

func TestServeSocketSetup(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "pam.sock")
	// A stale socket from an earlier run, nobody listening.
	os.Mkdir(filepath.Join(dir, "run"), 0o700)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	ts := startServer(t, dir, nil)
	ts.mustServe(t)

	// A second server on the same live socket refuses to steal it.
	s2 := &Server{Path: sock, Verifier: ts.v}
	if err := s2.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Serve: %v, want in use", err)
	}
	ts.mustServe(t)

	// A missing directory is created 0755; OnListen is told when the socket is there.
	listening := make(chan struct{})
	fresh := startServer(t, filepath.Join(dir, "a", "b"), func(s *Server) {
		s.OnListen = func() {
			if _, err := os.Stat(s.Path); err != nil {
				t.Errorf("OnListen before the socket exists: %v", err)
			}
			close(listening)
		}
	})
	select {
	case <-listening:
	case <-time.After(5 * time.Second):
		t.Error("OnListen was not called")
	}
	fi, err := os.Stat(filepath.Dir(fresh.path))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("socket directory: %v, %v; want 0755", fi.Mode(), err)
	}

	// A regular file in the way is not removed.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("x"), 0o600)
	s3 := &Server{Path: file, Verifier: ts.v}
	if err := s3.Serve(t.Context()); err == nil {
		t.Error("Serve over a regular file succeeded")
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file removed: %v", err)
	}
	if err := (&Server{Path: filepath.Join(dir, "x.sock")}).Serve(t.Context()); err == nil {
		t.Error("Serve without a Verifier succeeded")
	}
}

// TestServeShutdown cancels while a request waits for the verifier: the client gets
// Unavailable, Serve waits for it, returns nil and removes the socket.
func TestServeShutdown(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(s *Server) { s.Timeout = 30 * time.Second })
	idle, err := net.Dial("unix", ts.path) // a connection that never writes
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	got := make(chan Response, 1)
	go func() {
		r, err := ask(ts.path, Request{Type: TypeVerify, User: "root", Service: "sshd", Code: "block"})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	for ts.v.count() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	ts.shutdown(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if r := <-got; r.Result != Unavailable {
		t.Errorf("in-flight request got %v, want %v", r.Result, Unavailable)
	}
}

// TestServeMaxConns: with one slot, a silent client delays the next one until it is
// dropped.
func TestServeMaxConns(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(s *Server) { s.MaxConns = 1; s.Timeout = 300 * time.Millisecond })
	idle, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	ts.mustServe(t)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("second client served after %v, want it to wait for the first slot", d)
	}
}
