//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

const (
	cliTerminal = "3f2a9c1e-7b4d-4e0f-9a55-0c1d2e3f4a5b"
	cliDevice   = "0781:5581:4C530001230815117432"
)

var cliOfflineKey = []byte("0123456789abcdef0123456789abcdef")

// agentSide serves a real exemptions manager on a state directory's
// control socket, as the running agent does; the "media side" makes sdb
// writable whenever the manager allows it.
func agentSide(t *testing.T, dir string) (stop func()) {
	t.Helper()
	var mu sync.Mutex
	writable := false
	var m *exemptions.Manager
	m, err := exemptions.New(exemptions.Options{
		StateDir: dir, TerminalID: cliTerminal, OfflineKey: cliOfflineKey,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Apply: func(context.Context) {
			_, ok := m.Allows("0781", "5581", "4C530001230815117432")
			mu.Lock()
			writable = ok
			mu.Unlock()
		},
		Attached: func() []*mnguardv1.RemovableDevice {
			mu.Lock()
			defer mu.Unlock()
			st := "read-only"
			if writable {
				st = "exempted"
			}
			return []*mnguardv1.RemovableDevice{{Name: "sdb", VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432", State: st}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	wg.Go(func() {
		srv := &exemptions.ControlServer{Path: filepath.Join(dir, exemptions.SocketName), Handle: m.Handle,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnListen: func() { close(listening) }}
		if err := srv.Serve(ctx); err != nil {
			t.Error(err)
		}
	})
	<-listening
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

var challengeLine = regexp.MustCompile(`(?m)^Challenge: ([0-9A-Z]{5}-[0-9A-Z]{5})$`)

// TestExemptionCLI runs 'mnguard-agent exemption' against a real control
// socket: challenge, a wrong code, the helpdesk's code, list, usage errors,
// and list from the file once the agent is gone.
func TestExemptionCLI(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte("state_dir: "+dir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "MNGUARD_CONFIG" {
			return cfgPath
		}
		return ""
	}
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"exemption"}, args...), &out, &errb, getenv)
		return code, out.String(), errb.String()
	}
	stop := agentSide(t, dir)

	code, out, errs := cli("challenge", "--device", cliDevice, "--duration", "1h")
	m := challengeLine.FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "terminal "+cliTerminal+", device "+cliDevice+", 1h.") ||
		!strings.Contains(out, "mnguard-agent exemption enter CODE (before ") {
		t.Fatalf("challenge: exit %d\n%s%s", code, out, errs)
	}
	t.Logf("challenge:\n%s", out)
	dev, _ := exemption.ParseDevice(cliDevice)
	resp, err := exemption.ResponseCode(cliOfflineKey, cliTerminal, m[1], dev)
	if err != nil {
		t.Fatal(err)
	}
	wrong := "00000-00000"
	if resp == "0000000000" {
		wrong = "11111-11111"
	}
	code, out, errs = cli("enter", wrong)
	if code != 1 || out != "" || !strings.HasPrefix(errs, "mnguard-agent exemption enter: wrong code (4 more wrong codes lock entry for 15m0s)") ||
		strings.Count(errs, "\n") != 1 {
		t.Errorf("wrong code: exit %d %q %q", code, out, errs)
	}

	// Typed as the helpdesk reads it, in two groups.
	code, out, errs = cli("enter", resp[:5], resp[5:])
	want := regexp.MustCompile(`^sdb \(` + cliDevice + `\) writable until \d\d:\d\d \(1h\)\n$`)
	if code != 0 || !want.MatchString(out) {
		t.Fatalf("enter: exit %d %q %q", code, out, errs)
	}
	t.Logf("enter: %s", out)
	code, _, errs = cli("enter", resp)
	if code != 1 || !strings.Contains(errs, "used already") {
		t.Errorf("code again: exit %d %q", code, errs)
	}

	code, out, errs = cli("list")
	if code != 0 || !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "offline-"+strings.ReplaceAll(m[1], "-", "")) ||
		!strings.Contains(out, " applied ") || !strings.Contains(out, " sdb ") {
		t.Errorf("list: exit %d\n%s%s", code, out, errs)
	}
	t.Logf("list:\n%s", out)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "usage: mnguard-agent exemption"},
		{[]string{"format"}, `unknown subcommand "format"`},
		{[]string{"challenge"}, "--device VID:PID:SERIAL is required"},
		{[]string{"challenge", "--device", "sdb"}, "want VID:PID:SERIAL"},
		{[]string{"challenge", "--device", cliDevice, "--duration", "10m"}, "multiple of 15m0s"},
		{[]string{"challenge", "--device", cliDevice, "--duration", "soon"}, "invalid value"},
		{[]string{"enter"}, "response code is required"},
		{[]string{"enter", "ABC"}, "malformed code"},
		{[]string{"list", "x"}, "no arguments"},
	} {
		code, _, errs := cli(tt.args...)
		if code != 2 || !strings.Contains(errs, tt.want) {
			t.Errorf("exemption %v: exit %d %q, want 2 and %q", tt.args, code, errs, tt.want)
		}
	}
	if code, out, _ := cli("help"); code != 0 || !strings.Contains(out, "enter CODE") {
		t.Errorf("help: %d %q", code, out)
	}

	stop()
	code, out, errs = cli("list")
	if code != 0 || !strings.Contains(errs, "the agent is not running; from "+filepath.Join(dir, exemptions.FileName)) ||
		!strings.Contains(out, " waiting ") {
		t.Errorf("list without the agent: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = cli("enter", resp)
	if code != 1 || !strings.Contains(errs, "the agent is not running") {
		t.Errorf("enter without the agent: exit %d %q", code, errs)
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 90 * time.Minute: "1h30m", 45 * time.Minute: "45m", 10 * time.Minute: "10m",
		30 * time.Second: "30s", 0: "0s", 8 * time.Hour: "8h", 59*time.Minute + 40*time.Second: "1h",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%v) = %q, want %q", d, got, want)
		}
	}
}
