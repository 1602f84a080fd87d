//go:build linux

package mfa

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mnguard/mnguard/internal/testenv"
)

// The flood helper: the test binary re-executed as another uid connects to the
// socket in floodSocketEnv. In mode "hold" it opens floodConnsEnv connections and
// writes nothing, reports how many the server left open, then, holding them, keeps
// opening new ones (closing the oldest of those beyond as many again; it says
// "churning" once it opened as many) until its stdin closes, while one goroutine
// per CPU connects and closes in a tight loop. In mode "idle" it
// opens one connection, writes nothing and reports after how long the server
// dropped it.
const (
	floodSocketEnv = "MNGUARD_MFA_TEST_FLOOD_SOCKET"
	floodModeEnv   = "MNGUARD_MFA_TEST_FLOOD_MODE"
	floodConnsEnv  = "MNGUARD_MFA_TEST_FLOOD_CONNS"
)

func flood(path string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 2 }
	if os.Getenv(floodModeEnv) == "idle" {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			return fail(err)
		}
		start := time.Now()
		c.SetReadDeadline(start.Add(15 * time.Second))
		_, err = c.Read(make([]byte, 1))
		fmt.Printf("dropped=%v ms=%d\n", err == io.EOF, time.Since(start).Milliseconds())
		return 0
	}
	n, err := strconv.Atoi(os.Getenv(floodConnsEnv))
	if err != nil {
		return fail(err)
	}
	var conns []net.Conn
	for len(conns) < n {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if errors.Is(err, syscall.EAGAIN) { // the server's listen queue is full
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("connection %d: %w", len(conns)+1, err))
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond)
	open := n - closedByPeer(conns)
	fmt.Printf("open=%d of %d\n", open, n)

	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	// Hammers connect and close as fast as they can, a CPU each, as a
	// program in C would.
	var hammered, hammerFailed atomic.Int64
	for range runtime.NumCPU() {
		go func() {
			sa := &unix.SockaddrUnix{Name: path}
			for {
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					hammerFailed.Add(1)
					continue
				}
				if unix.Connect(fd, sa) != nil {
					hammerFailed.Add(1)
				}
				unix.Close(fd)
				hammered.Add(1)
			}
		}()
	}
	// The first n stay open; n more are a rolling window of new ones.
	var extra []net.Conn
	var dials, refused int
	for {
		select {
		case <-stdinClosed:
			fmt.Printf("dials=%d failed=%d hammered=%d failed=%d\n", dials, refused, hammered.Load(), hammerFailed.Load())
			runtime.KeepAlive(conns) // unreachable connections would be closed by the GC
			return 0
		default:
		}
		c, err := net.DialTimeout("unix", path, 100*time.Millisecond)
		if dials++; dials == n {
			fmt.Println("churning")
		}
		if err != nil {
			refused++
			continue
		}
		if len(extra) == n {
			extra[0].Close()
			extra = extra[1:]
		}
		extra = append(extra, c)
	}
}

// closedByPeer counts the connections the other end has closed, with one poll.
func closedByPeer(conns []net.Conn) int {
	fds := make([]unix.PollFd, len(conns))
	for i, c := range conns {
		raw, err := c.(*net.UnixConn).SyscallConn()
		if err != nil {
			panic(err)
		}
		raw.Control(func(fd uintptr) { fds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP} })
	}
	if _, err := unix.Poll(fds, 0); err != nil {
		panic(err)
	}
	n := 0
	for _, p := range fds {
		if p.Revents&(unix.POLLIN|unix.POLLRDHUP|unix.POLLHUP) != 0 {
			n++
		}
	}
	return n
}

// asNobody returns a directory others may enter and a copy of the test binary in
// it, for helpers run as uid 65534.
func nobodyDir(t *testing.T) (dir, bin string) {
	t.Helper()
	testenv.RequireRoot(t, "running a client as another uid")
	dir, err := os.MkdirTemp("", "mfa-flood-")
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
	bin = filepath.Join(dir, "mfa.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// floodHelper is a running flood helper.
type floodHelper struct {
	cmd   *exec.Cmd
	stdin io.Closer
	out   *bufio.Scanner
}

func startFlood(t *testing.T, bin, sock, mode string, conns int) *floodHelper {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = filepath.Dir(bin)
	cmd.Env = []string{floodSocketEnv + "=" + sock, floodModeEnv + "=" + mode, floodConnsEnv + "=" + strconv.Itoa(conns)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &floodHelper{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	return h
}

// line reads the helper's next line.
func (h *floodHelper) line(t *testing.T) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if h.out.Scan() {
			got <- h.out.Text()
		}
		close(got)
	}()
	select {
	case l, ok := <-got:
		if !ok {
			t.Fatal("the flood helper ended without a report")
		}
		return l
	case <-time.After(60 * time.Second):
		t.Fatal("no report from the flood helper within 60s")
	}
	return ""
}

func reportField(t *testing.T, line, name string) int {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("helper line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("helper line %q has no %s", line, name)
	return 0
}

// askLikePAM asks as pam_mnguard.so does: a blocking connect (which waits while
// the server's listen queue is full, where Go's net.Dial fails at once with
// EAGAIN) bounded by SO_SNDTIMEO, then one request and one response.
func askLikePAM(path string, req Request) (Response, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Response{}, err
	}
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return Response{}, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return Response{}, fmt.Errorf("connect: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	p, err := EncodeRequest(req)
	if err != nil {
		return Response{}, err
	}
	if err := WriteFrame(c, p); err != nil {
		return Response{}, err
	}
	q, err := ReadFrame(c)
	if err != nil {
		return Response{}, err
	}
	return DecodeResponse(q)
}

// rootLogins asks n times as root and returns how long each answer took; a
// request not answered Accepted ends the test.
func rootLogins(t *testing.T, ts *testServer, n int, what string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for i := range n {
		time.Sleep(50 * time.Millisecond) // spread over a second of flood
		start := time.Now()
		r, err := askLikePAM(ts.path, Request{Type: TypeVerify, User: "root", Service: "login", Code: "000000"})
		d := time.Since(start)
		if err != nil || r.Result != Accepted {
			t.Fatalf("%s: root request %d after %v: %+v, %v", what, i+1, d.Round(time.Millisecond), r, err)
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// TestServeUserFlood is issue 11's attack on the login gate: uid 65534 holds 1,000
// idle connections and keeps opening new ones. The server keeps at most
// DefaultMaxConnsPerUID of them open, and root (login, sshd, gdm) is answered as
// quickly as without the flood (the median within 100 ms of the quiet one).
func TestServeUserFlood(t *testing.T) {
	dir, bin := nobodyDir(t)
	ts := startServer(t, dir, func(s *Server) { s.Timeout = 10 * time.Second })
	quiet := rootLogins(t, ts, 20, "without the flood")

	h := startFlood(t, bin, ts.path, "hold", 1000)
	report := h.line(t)
	if open := reportField(t, report, "open"); open > DefaultMaxConnsPerUID {
		t.Errorf("uid 65534 holds %d idle connections open, want at most %d", open, DefaultMaxConnsPerUID)
	}
	if l := h.line(t); l != "churning" {
		t.Fatalf("helper: %q, want churning", l)
	}
	flooded := rootLogins(t, ts, 20, "during the flood")
	h.stdin.Close()
	churn := h.line(t)
	if reportField(t, churn, "dials") < 2000 {
		t.Errorf("the helper opened few connections during the test (%s): the flood did not run", churn)
	}
	q, f := quiet[len(quiet)/2], flooded[len(flooded)/2]
	t.Logf("root request: median %v quiet, %v flooded (max %v); helper: %s, %s", q, f, flooded[len(flooded)-1], report, churn)
	if f-q > 100*time.Millisecond {
		t.Errorf("the flood delays root by %v at the median (%v quiet, %v flooded), want at most 100ms", f-q, q, f)
	}
}

// TestServeUserRequestDeadline: a connection from another uid that sends nothing is
// dropped after DefaultRequestTimeout, long before Timeout; root's is not.
func TestServeUserRequestDeadline(t *testing.T) {
	dir, bin := nobodyDir(t)
	ts := startServer(t, dir, func(s *Server) { s.Timeout = 10 * time.Second })
	rootIdle, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer rootIdle.Close()

	h := startFlood(t, bin, ts.path, "idle", 1)
	l := h.line(t)
	if !strings.Contains(l, "dropped=true") {
		t.Fatalf("uid 65534's idle connection: %s, want dropped", l)
	}
	if ms := time.Duration(reportField(t, l, "ms")) * time.Millisecond; ms < DefaultRequestTimeout-100*time.Millisecond || ms > DefaultRequestTimeout+2*time.Second {
		t.Errorf("uid 65534's idle connection dropped after %v, want about %v", ms, DefaultRequestTimeout)
	}
	rootIdle.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := rootIdle.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Errorf("root's idle connection: %v, want still open (its deadline is Timeout)", err)
	}
}
