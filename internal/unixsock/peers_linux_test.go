//go:build linux

package unixsock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// The dial helper: the test binary re-executed as another uid opens
// dialConnsEnv connections to the socket in dialSocketEnv, prints how many
// the server answered ("x") and how many it closed unanswered, and holds
// them until its stdin closes.
const (
	dialSocketEnv = "MNGUARD_UNIXSOCK_TEST_DIAL"
	dialConnsEnv  = "MNGUARD_UNIXSOCK_TEST_CONNS"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(dialSocketEnv); path != "" {
		os.Exit(dialHelper(path))
	}
	os.Exit(m.Run())
}

func dialHelper(path string) int {
	n, _ := strconv.Atoi(os.Getenv(dialConnsEnv))
	var conns []net.Conn
	var served, closed, pending int
	for range n {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		conns = append(conns, c)
		// One at a time, so that the order of the verdicts is the order of
		// the connections.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1)
		switch _, err := c.Read(b); {
		case err == nil && b[0] == 'x':
			served++
		case err == io.EOF:
			closed++
		default:
			pending++
		}
	}
	fmt.Printf("served=%d closed=%d pending=%d\n", served, closed, pending)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// dialAs runs the dial helper as uid with n connections and returns its
// report and a function that ends it (closing its connections).
func dialAs(t *testing.T, bin, sock string, uid uint32, n int) (report string, end func()) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = filepath.Dir(bin)
	cmd.Env = []string{dialSocketEnv + "=" + sock, dialConnsEnv + "=" + strconv.Itoa(n)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534}}
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
	var once sync.Once
	end = func() {
		once.Do(func() {
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("helper as uid %d: %v", uid, err)
			}
		})
	}
	t.Cleanup(end)
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("helper as uid %d gave no report", uid)
	}
	return sc.Text(), end
}

// TestServePeersLimits: connections of one uid beyond PerUID, or of all
// users beyond Users, are closed at once, unanswered; root has slots of its
// own that users cannot take, and waits for one rather than being refused;
// slots are given back when connections end; OnRefused is told.
func TestServePeersLimits(t *testing.T) {
	testenv.RequireRoot(t, "running clients as other uids")
	dir, err := os.MkdirTemp("", "unixsock-peers-")
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
	bin := filepath.Join(dir, "unixsock.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.sock")
	ln, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	refused := map[uint32]int{}
	handled := map[uint32]int{}
	// A handler answers "x" and holds the connection until the client
	// closes it or the server stops.
	var ctx context.Context
	handle := func(c *net.UnixConn, uid uint32) {
		defer c.Close()
		defer context.AfterFunc(ctx, func() { c.Close() })()
		mu.Lock()
		handled[uid]++
		mu.Unlock()
		c.Write([]byte("x"))
		io.Copy(io.Discard, c)
	}
	lim := PeerLimits{Privileged: 1, PerUID: 2, Users: 3, OnRefused: func(uid uint32, n int) {
		mu.Lock()
		refused[uid] += n
		mu.Unlock()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ServePeers(ctx, ln, lim, nil, handle) }()

	// uid 65534: two served, the rest closed at once.
	if got, _ := dialAs(t, bin, path, 65534, 10); got != "served=2 closed=8 pending=0" {
		t.Errorf("uid 65534, 10 connections: %s; want 2 served and 8 closed", got)
	}
	// uid 65533: one slot left of the users' three.
	got, end65533 := dialAs(t, bin, path, 65533, 10)
	if got != "served=1 closed=9 pending=0" {
		t.Errorf("uid 65533, 10 connections: %s; want 1 served (users' limit 3) and 9 closed", got)
	}

	// Root is served while the users hold every slot of theirs; a second
	// root connection waits for root's one slot instead of being refused.
	root1 := dialRoot(t, path)
	if err := readX(root1, 2*time.Second); err != nil {
		t.Fatalf("root while users hold their slots: %v", err)
	}
	root2 := dialRoot(t, path)
	if err := readX(root2, 300*time.Millisecond); !os.IsTimeout(err) {
		t.Fatalf("second root connection with one privileged slot: %v, want it waiting", err)
	}
	root1.Close()
	if err := readX(root2, 5*time.Second); err != nil {
		t.Fatalf("second root connection after the first ended: %v", err)
	}

	// uid 65533 ends: its slot is free for another uid.
	end65533()
	time.Sleep(100 * time.Millisecond) // the handler sees the close
	if got, _ := dialAs(t, bin, path, 65532, 2); got != "served=1 closed=1 pending=0" {
		t.Errorf("uid 65532 after uid 65533 ended: %s; want 1 served, 1 closed", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServePeers after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServePeers did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := map[uint32]int{65534: 8, 65533: 9, 65532: 1}; fmt.Sprint(refused) != fmt.Sprint(want) {
		t.Errorf("OnRefused told %v, want %v", refused, want)
	}
	if want := map[uint32]int{0: 2, 65534: 2, 65533: 1, 65532: 1}; fmt.Sprint(handled) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", handled, want)
	}
}

// TestServePeersBadLimits: limits that admit nobody are an error, not a hang.
func TestServePeersBadLimits(t *testing.T) {
	ln, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, lim := range []PeerLimits{{}, {Privileged: 1, PerUID: -1}, {Privileged: 1, Users: -1}} {
		if err := ServePeers(context.Background(), ln, lim, nil, func(c *net.UnixConn, _ uint32) { c.Close() }); err == nil {
			t.Errorf("ServePeers with %+v = nil", lim)
		}
	}
}

func dialRoot(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readX(c net.Conn, within time.Duration) error {
	c.SetReadDeadline(time.Now().Add(within))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return err
	}
	if b[0] != 'x' {
		return fmt.Errorf("read %q", b)
	}
	return nil
}
