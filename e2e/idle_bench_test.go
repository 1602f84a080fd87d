package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// BenchmarkAgentIdle measures what an enrolled agent costs the terminal
// while nothing happens: a real mnguard-agent process configured as in
// production (removable-media enforcement on the machine's real block
// devices, the login gate serving its socket, posture of the real machine
// judged against /etc/pam.d, info logging, 60 s report interval) connected
// over mTLS to a real collector. After a warm-up (MNGUARD_BENCH_WARMUP,
// default 30s) it samples the agent's /proc/PID/status VmRSS and
// /proc/PID/stat utime+stime+cutime+cstime every second for MNGUARD_BENCH_IDLE (default
// 10m) and reports the resident set (max and at the end) and the share of
// one core used.
func BenchmarkAgentIdle(b *testing.B) {
	testenv.RequireRoot(b, "enforce removable media on the machine's block devices")
	idle := envDuration(b, "MNGUARD_BENCH_IDLE", 10*time.Minute)
	warmup := envDuration(b, "MNGUARD_BENCH_WARMUP", 30*time.Second)
	c := newCollector(b, "--log-level", "warn")
	a, id := enrolledAgent(b, c, "60s")
	// Production settings, but the agent's own login socket.
	cfg := fmt.Sprintf("server: %s\nstate_dir: %s\nreport_interval: 60s\nlog_level: info\nmfa:\n  socket: %s\n", c.grpcAddr, a.stateDir, a.pamSocket)
	if err := os.WriteFile(a.config, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	a.start(b)
	c.waitReported(b, id, 10*time.Second)
	eventually(b, 10*time.Second, func() error {
		_, err := os.Stat(a.pamSocket)
		return err
	})
	pid := a.proc.cmd.Process.Pid
	time.Sleep(warmup)

	// Count the kernel's uevents in the window: on a shared machine other
	// processes' devices (loop devices of other tests) come and go, and the
	// agent's media enforcement looks at each; the idle is then not idle.
	uevents, stopCount := countUevents(b)
	b.ResetTimer()
	start := time.Now()
	cpu0, err := procCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	var rssMax, rssEnd, rssSum float64
	samples := 0
	for time.Since(start) < idle {
		time.Sleep(time.Second)
		rss, err := procRSS(pid)
		if err != nil {
			b.Fatalf("agent: %v\n%s", err, a.proc.out.String())
		}
		rssMax, rssEnd = max(rssMax, rss), rss
		rssSum += rss
		samples++
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stopCount()
	if !a.proc.running() {
		b.Fatalf("the agent exited while idle\n%s", a.proc.out.String())
	}
	cpuPct := 100 * (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	b.ReportMetric(rssMax, "idle_rss_max_MiB")
	b.ReportMetric(rssEnd, "idle_rss_end_MiB")
	b.ReportMetric(cpuPct, "idle_cpu_%")
	b.ReportMetric(float64(uevents.Load()), "uevents")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("agent idle over %s (after %s warm-up): RSS max %.1f MiB, mean %.1f MiB, end %.1f MiB; CPU %s = %.3f %% of one core; %d kernel uevents in the window\n",
		elapsed.Round(time.Second), warmup, rssMax, rssSum/float64(samples), rssEnd, (cpu1 - cpu0).Round(time.Millisecond), cpuPct, uevents.Load())
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration such as 3m", name, v)
	}
	return d
}

// procRSS returns VmRSS of process pid in MiB.
func procRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("VmRSS line %q", line)
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// procCPU returns the user plus system CPU time of process pid (all its
// threads) and of the children it waited for (the agent's cost includes
// the programs it runs, such as lsb_release), from /proc/PID/stat, whose
// clock ticks are 1/100 s (USER_HZ, 100 on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime, stime, cutime and cstime are fields
	// 14 to 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	var ticks uint64
	for _, s := range f[11:15] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %q: %w", pid, b, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}
