package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// binDir holds the binaries TestMain builds from this tree.
var binDir string

// buildTags are the Makefile's TAGS: the binaries tested are the ones
// shipped.
const buildTags = "grpcnotrace"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mnguard-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-tags", buildTags, "-o", dir+"/", "../agent/cmd/mnguard-agent", "../server/cmd/mnguard-server", "../server/cmd/mnguardctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// An agent whose wall clock a test can shift (MNGUARD_TEST_CLOCK_SHIFT_FILE):
	// the same code with the mnguard_testclock tag, in its own directory.
	tc := exec.Command("go", "build", "-tags", buildTags+",mnguard_testclock", "-o", filepath.Join(dir, "testclock")+"/", "../agent/cmd/mnguard-agent")
	tc.Env = cmd.Env
	if out, err := tc.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the test-clock agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The PAM module, as make build builds it.
	pam := exec.Command("cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-O2", "-shared",
		"-o", filepath.Join(dir, "pam_mnguard.so"), "../agent/pam/pam_mnguard.c", "-lpam")
	if out, err := pam.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pam_mnguard.so (make deps installs libpam0g-dev): %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a background process whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

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

func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	return startProcIn(t, "", name, env, args...)
}

// inNetns is the command line that runs name inside network namespace ns
// ("": where the test runs). 'ip netns exec' execs the program, so the
// process started is the program itself: its PID, its signals.
func inNetns(ns, name string, args []string) (string, []string) {
	if ns == "" {
		return name, args
	}
	return "ip", append([]string{"netns", "exec", ns, name}, args...)
}

// startProcIn is startProc inside network namespace ns.
func startProcIn(t testing.TB, ns, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	prog, argv := inNetns(ns, bin(name), args)
	p.cmd = exec.Command(prog, argv...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 15s of SIGINT", p.name)
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// collector is a running mnguard-server.
type collector struct {
	// netns is the network namespace it and mnguardctl run in; "" for the
	// test's own.
	netns      string
	dir        string
	grpcAddr   string
	httpAddr   string
	pin        string
	tokenFile  string
	proc       *proc
	extraFlags []string
	started    bool // once, so restarts keep their addresses
}

// newCollector initialises a data directory with 'mnguard-server init' and
// starts 'mnguard-server serve' on it.
func newCollector(t testing.TB, flags ...string) *collector {
	t.Helper()
	return newCollectorAt(t, "", freeAddr(t), freeAddr(t), flags...)
}

// newCollectorAt is newCollector listening on grpcAddr and httpAddr inside
// network namespace ns ("": the test's own).
func newCollectorAt(t testing.TB, ns, grpcAddr, httpAddr string, flags ...string) *collector {
	t.Helper()
	c := &collector{netns: ns, dir: t.TempDir(), grpcAddr: grpcAddr, httpAddr: httpAddr, extraFlags: flags}
	out, err := exec.Command(bin("mnguard-server"), "init", "--data-dir", c.dir).Output()
	if err != nil {
		t.Fatalf("mnguard-server init: %v", err)
	}
	c.pin = strings.TrimSpace(string(out))
	if _, err := pki.ParsePin(c.pin); err != nil {
		t.Fatalf("init printed %q, not a pin: %v", c.pin, err)
	}
	c.tokenFile = filepath.Join(c.dir, "admin.token")
	if fi, err := os.Stat(c.tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v, mode %v; want 0600", err, fi.Mode())
	}
	c.start(t)
	return c
}

func (c *collector) start(t testing.TB) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		args := append([]string{"serve", "--data-dir", c.dir, "--grpc-listen", c.grpcAddr, "--http-listen", c.httpAddr}, c.extraFlags...)
		c.proc = startProcIn(t, c.netns, "mnguard-server", nil, args...)
		err := c.waitHealthy(t)
		if err == nil {
			c.started = true
			return
		}
		// freeAddr's port can be taken by another test process before the
		// server binds it; on a first start, take other ports.
		if !c.started && c.netns == "" && attempt < 5 && strings.Contains(c.proc.out.String(), "address already in use") {
			c.grpcAddr, c.httpAddr = freeAddr(t), freeAddr(t)
			continue
		}
		t.Fatal(err)
	}
}

func (c *collector) stop(t testing.TB) { c.proc.stop(t) }

func (c *collector) caPool(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func (c *collector) httpsClient(t testing.TB) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.caPool(t), ServerName: "127.0.0.1"},
		DialContext:     netnsDialer(c.netns),
	}}
}

func (c *collector) waitHealthy(t testing.TB) error {
	t.Helper()
	cl := c.httpsClient(t)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if !c.proc.running() {
			return fmt.Errorf("mnguard-server exited: %v\n%s", c.proc.err, c.proc.out.String())
		}
		resp, err := cl.Get("https://" + c.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("mnguard-server not healthy within 20s\n%s", c.proc.out.String())
}

// ctlEnv is the environment mnguardctl takes its connection from.
func (c *collector) ctlEnv() []string {
	return []string{"MNGUARD_SERVER=" + c.grpcAddr, "MNGUARD_CA_PIN=" + c.pin, "MNGUARD_TOKEN=", "MNGUARD_TOKEN_FILE="}
}

// ctl runs mnguardctl with the admin token file and returns its output.
func (c *collector) ctl(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runIn(t, c.netns, c.ctlEnv(), "mnguardctl", append([]string{"--token-file", c.tokenFile}, args...)...)
}

// ctlJSON runs mnguardctl -o json and decodes into msg; it fails the test
// on a non-zero exit.
func (c *collector) ctlJSON(t testing.TB, msg proto.Message, args ...string) {
	t.Helper()
	out, errOut, code := c.ctl(t, append(args, "-o", "json")...)
	if code != 0 {
		t.Fatalf("mnguardctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	if err := protojson.Unmarshal([]byte(out), msg); err != nil {
		t.Fatalf("mnguardctl %s -o json printed %q: %v", strings.Join(args, " "), out, err)
	}
}

func run(t testing.TB, env []string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runIn(t, "", env, name, args...)
}

// runIn is run inside network namespace ns.
func runIn(t testing.TB, ns string, env []string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prog, argv := inNetns(ns, bin(name), args)
	cmd := exec.CommandContext(ctx, prog, argv...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		t.Fatalf("run %s: %v", name, err)
	}
	return o.String(), e.String(), 0
}

// agent is an agent's state directory and configuration file.
type agent struct {
	// netns is the network namespace it runs in; "" for the test's own.
	netns     string
	stateDir  string
	config    string
	pamSocket string
	proc      *proc
	// clockShift, when set, is the shift file of an agent started from
	// the test-clock build (useTestClock).
	clockShift string
}

// useTestClock makes a start the test-clock build of the agent, whose wall
// clock of exemptions is shifted by what shiftClock writes.
func (a *agent) useTestClock(t testing.TB) {
	a.clockShift = filepath.Join(t.TempDir(), "clock-shift")
}

// shiftClock sets the test-clock agent's wall clock off by d from now on.
func (a *agent) shiftClock(t testing.TB, d time.Duration) {
	t.Helper()
	if a.clockShift == "" {
		t.Fatal("shiftClock: the agent is not the test-clock build")
	}
	if err := os.WriteFile(a.clockShift+".tmp", []byte(d.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(a.clockShift+".tmp", a.clockShift); err != nil {
		t.Fatal(err)
	}
}

func newAgent(t testing.TB, c *collector, reportInterval string) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{stateDir: filepath.Join(dir, "state"), config: filepath.Join(dir, "agent.yaml"), pamSocket: filepath.Join(dir, "run", "pam.sock")}
	// Each agent its own login socket, not the machine's /run/mnguard.
	yaml := fmt.Sprintf("server: %s\nstate_dir: %s\nreport_interval: %s\nlog_level: debug\nmfa:\n  socket: %s\n", c.grpcAddr, a.stateDir, reportInterval, a.pamSocket)
	if err := os.WriteFile(a.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *agent) args(cmd string, more ...string) []string {
	return append([]string{cmd, "--config", a.config, "--state-dir", a.stateDir}, more...)
}

func (a *agent) enroll(t testing.TB, c *collector, token, pin string, more ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runIn(t, a.netns, nil, "mnguard-agent", a.args("enroll", append([]string{"--server", c.grpcAddr, "--token", token, "--ca-pin", pin}, more...)...)...)
}

func (a *agent) start(t testing.TB) {
	t.Helper()
	if a.clockShift != "" {
		a.proc = startProc(t, "testclock/mnguard-agent", []string{"MNGUARD_TEST_CLOCK_SHIFT_FILE=" + a.clockShift}, a.args("run")...)
		return
	}
	a.proc = startProcIn(t, a.netns, "mnguard-agent", nil, a.args("run")...)
}

func (a *agent) terminalID(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "enrollment.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		TerminalID string `json:"terminal_id"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e.TerminalID
}

// eventually polls f until it returns nil or the time is up.
func eventually(t testing.TB, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", within, err)
}

// enrolledAgent enrolls a new agent with a fresh one-use token and returns
// it with its terminal ID.
func enrolledAgent(t testing.TB, c *collector, reportInterval string) (*agent, string) {
	t.Helper()
	a := newAgent(t, c, reportInterval)
	if _, errOut, code := a.enroll(t, c, c.token(t, "1h", 1), c.pin); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, errOut)
	}
	return a, a.terminalID(t)
}

// waitReported waits until the terminal has reported, and returns it.
func (c *collector) waitReported(t testing.TB, id string, within time.Duration) *mnguardv1.Terminal {
	t.Helper()
	var term *mnguardv1.Terminal
	eventually(t, within, func() error {
		term = c.terminal(t, id)
		if term.GetLastSeenAt() == nil {
			return fmt.Errorf("terminal %s has not reported", id)
		}
		return nil
	})
	return term
}
