package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The network helper: this test binary, re-executed inside a namespace
// with netHelperEnv set to "connect" or "listen" and netHelperAddrEnv to
// an address, connects to it (or listens on it, accepting), says
// "connected LOCAL REMOTE", "listening ADDR" or "failed ERR" on stdout,
// and holds its sockets until its stdin closes. It is a process of its
// own, so the agent has a real PID and process name to report. It runs
// from init, before TestMain builds the binaries.
const (
	netHelperEnv     = "MNGUARD_E2E_NET_HELPER"
	netHelperAddrEnv = "MNGUARD_E2E_NET_ADDR"
)

func init() {
	if mode := os.Getenv(netHelperEnv); mode != "" {
		os.Exit(netHelper(mode, os.Getenv(netHelperAddrEnv)))
	}
}

func netHelper(mode, addr string) int {
	var held []io.Closer
	switch mode {
	case "connect":
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			fmt.Printf("failed %v\n", err)
			return 3
		}
		held = append(held, c)
		fmt.Printf("connected %s %s\n", c.LocalAddr(), c.RemoteAddr())
	case "listen":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Printf("failed %v\n", err)
			return 3
		}
		held = append(held, l)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		fmt.Printf("listening %s\n", l.Addr())
	default:
		fmt.Printf("failed unknown mode %q\n", mode)
		return 2
	}
	io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	return 0
}

// helperProc is a running network helper.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// Line is what it said first; At when it said it.
	Line string
	At   time.Time
	done chan struct{}
}

// startHelper runs the network helper in namespace ns and waits for its
// first line; the helper ends when the test does (or by stop).
func startHelper(t testing.TB, ns *netns, mode, addr string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: exec.Command("ip", "netns", "exec", ns.name, exe), done: make(chan struct{})}
	h.cmd.Env = append(os.Environ(), netHelperEnv+"="+mode, netHelperAddrEnv+"="+addr)
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// Not StdoutPipe: Wait would close it under a reader of a helper that
	// printed and exited at once.
	out := &firstLine{line: make(chan string, 1)}
	h.cmd.Stdout = out
	h.cmd.Stderr = os.Stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start the network helper: %v", err)
	}
	go func() { h.cmd.Wait(); close(h.done) }()
	t.Cleanup(h.stop)
	line := out.line
	select {
	case h.Line = <-line:
		h.At = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatalf("network helper %s %s in %s said nothing within 10s", mode, addr, ns.name)
	}
	if h.Line == "" {
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("network helper %s %s in %s ended without a word: %v", mode, addr, ns.name, h.cmd.ProcessState)
	}
	return h
}

// firstLine sends the first line written to it.
type firstLine struct {
	buf  []byte
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	if !f.sent {
		f.buf = append(f.buf, p...)
		if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
			f.sent = true
			f.line <- strings.TrimSpace(string(f.buf[:i]))
		}
	}
	return len(p), nil
}

// PID is the helper's process ID ('ip netns exec' execs it: the same).
func (h *helperProc) PID() int { return h.cmd.Process.Pid }

// Comm is the helper's process name as the kernel has it.
func (h *helperProc) Comm(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.PID()))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stop closes its stdin and waits for it to exit.
func (h *helperProc) stop() {
	h.stdin.Close()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
}
