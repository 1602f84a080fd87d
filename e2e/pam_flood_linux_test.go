package e2e

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
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// The flood helper: this test binary, re-executed as uid 65534 with
// floodSocketEnv set, opens floodConns connections to that socket and
// writes nothing on them, says "open=N" (how many the agent left open),
// then, holding them, keeps opening new ones (closing the oldest of those
// beyond floodConns more) and says "churning" once it opened floodConns,
// while one goroutine per CPU connects and closes in a tight loop, until
// its stdin closes; then it says how many connections it tried. It runs
// from init, before TestMain builds the binaries.
const floodSocketEnv = "MNGUARD_E2E_FLOOD_SOCKET"

const floodConns = 1000

func init() {
	if path := os.Getenv(floodSocketEnv); path != "" {
		os.Exit(floodHelper(path))
	}
}

func floodHelper(path string) int {
	var held []net.Conn
	for len(held) < floodConns {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if errors.Is(err, syscall.EAGAIN) { // the agent's listen queue is full
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "connection %d: %v\n", len(held)+1, err)
			return 2
		}
		held = append(held, c)
	}
	time.Sleep(300 * time.Millisecond)
	open := 0
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); os.IsTimeout(err) {
			open++
		}
	}
	fmt.Printf("open=%d\n", open)

	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	// Hammers connect and close as fast as they can, a CPU each, as a
	// program in C would.
	var hammered, hammerFailed atomic.Int64
	for range runtime.NumCPU() {
		go func() {
			sa := &syscall.SockaddrUnix{Name: path}
			for {
				fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
				if err != nil {
					hammerFailed.Add(1)
					continue
				}
				if syscall.Connect(fd, sa) != nil {
					hammerFailed.Add(1)
				}
				syscall.Close(fd)
				hammered.Add(1)
			}
		}()
	}
	var extra []net.Conn
	var dials, failed int
	for {
		select {
		case <-stdinClosed:
			fmt.Printf("dials=%d failed=%d hammered=%d failed=%d\n", dials, failed, hammered.Load(), hammerFailed.Load())
			runtime.KeepAlive(held) // unreachable connections would be closed by the GC
			return 0
		default:
		}
		c, err := net.DialTimeout("unix", path, 100*time.Millisecond)
		if dials++; dials == floodConns {
			fmt.Println("churning")
		}
		if err != nil {
			failed++
			continue
		}
		if len(extra) == floodConns {
			extra[0].Close()
			extra = extra[1:]
		}
		extra = append(extra, c)
	}
}

// TestPAMLoginUnderFlood is issue 11's "show it" for the login gate: uid
// 65534 (nobody) holding 1,000 idle connections to the real agent's PAM
// socket (mode 0666) and opening new ones in a loop does not delay a root
// pamtester login (the built pam_mnguard.so, the real collector) by more
// than 100 ms at the median, and no login fails. Before, the agent served
// 32 connections at once, each held up to 10 s: the logins failed with
// PAM_AUTHINFO_UNAVAIL; and with the system's listen queue (4,096) a root
// login queued for a quarter of a second behind the flood.
func TestPAMLoginUnderFlood(t *testing.T) {
	requirePamtester(t)
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing (make deps installs it)")
	}
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	// uid 65534 must reach the socket: open the test's directories to
	// others (the socket's own directory is the agent's, 0755).
	for d := filepath.Dir(filepath.Dir(a.pamSocket)); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a.start(t)
	c.waitReported(t, id, 10*time.Second)
	eventually(t, 10*time.Second, func() error { _, err := os.Stat(a.pamSocket); return err })
	service := pamService(t, a.pamSocket)

	// Two users, each confirmed by a first login with a TOTP code; their
	// recovery codes (ten each) are the logins measured, quiet and flooded.
	var codes [2][]string
	for i, name := range []string{"flood-quiet", "flood-attacked"} {
		var enr mnguardv1.EnrollUserResponse
		c.ctlJSON(t, &enr, "users", "enroll", name)
		login(t, service, name, oathtool(t, enr.GetSecret(), 0), pamOK)
		codes[i] = enr.GetRecoveryCodes()
	}
	measure := func(user string, codes []string, what string) []time.Duration {
		var ds []time.Duration
		for _, code := range codes {
			time.Sleep(50 * time.Millisecond) // spread over half a second of flood
			start := time.Now()
			out, ok := pamtester(t, service, user, code)
			d := time.Since(start)
			if !ok || !strings.Contains(out, pamOK) {
				t.Fatalf("%s: root login %d failed after %v:\n%s", what, len(ds)+1, d.Round(time.Millisecond), out)
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		return ds
	}
	quiet := measure("flood-quiet", codes[0], "without the flood")

	// The flood, as uid 65534, from a copy of this binary others may run.
	dir, err := os.MkdirTemp("", "mnguard-e2e-flood-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "e2e.test")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Dir = dir
	cmd.Env = []string{floodSocketEnv + "=" + a.pamSocket}
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
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the flood helper ended early")
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatal("the flood helper said nothing within 60s")
		}
		return ""
	}
	held := next()
	if l := next(); l != "churning" {
		t.Fatalf("flood helper: %q, want churning", l)
	}
	flooded := measure("flood-attacked", codes[1], "during the flood")
	stdin.Close()
	churn := next()
	var dials int
	if _, err := fmt.Sscanf(churn, "dials=%d", &dials); err != nil || dials < 2*floodConns {
		t.Errorf("flood helper: %q: the flood did not run through the logins", churn)
	}
	q, f := quiet[len(quiet)/2], flooded[len(flooded)/2]
	t.Logf("root pamtester login: median %v quiet, %v flooded (max %v); uid 65534: %s of %d held, %s",
		q.Round(time.Millisecond), f.Round(time.Millisecond), flooded[len(flooded)-1].Round(time.Millisecond), held, floodConns, churn)
	if f-q > 100*time.Millisecond {
		t.Errorf("the flood delays a root login by %v at the median (%v quiet, %v flooded), want at most 100ms", f-q, q, f)
	}
}
