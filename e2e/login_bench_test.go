package e2e

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// BenchmarkLogin measures PAM-to-answer latency: pam_authenticate in a C
// program (e2e/testdata/pamloop.c, linked with libpam) through the built
// pam_mnguard.so, the agent's socket, the agent's mutual-TLS connection and
// the collector's verification (SQLite, compare-and-set), on loopback.
// Each of MNGUARD_BENCH_LOGINS (default 1,000) logins is a different user
// imported from a seed file, with a valid code, one after the other.
func BenchmarkLogin(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("BenchmarkLogin writes a PAM service file: run as root")
	}
	n := envInt("MNGUARD_BENCH_LOGINS", 1000)
	dir := b.TempDir()
	pamloop := filepath.Join(dir, "pamloop")
	if out, err := exec.Command("cc", "-O2", "-o", pamloop, "testdata/pamloop.c", "-lpam").CombinedOutput(); err != nil {
		b.Fatalf("build pamloop: %v\n%s", err, out)
	}

	c := newCollector(b, "--log-level", "warn")
	a, id := enrolledAgent(b, c, "60s")
	a.start(b)
	c.waitReported(b, id, 10*time.Second)
	eventually(b, 10*time.Second, func() error { _, err := os.Stat(a.pamSocket); return err })
	service := fmt.Sprintf("mnguard-bench-%d", os.Getpid())
	conf := fmt.Sprintf("auth required %s socket=%s\naccount required pam_permit.so\n", bin("pam_mnguard.so"), a.pamSocket)
	if err := os.WriteFile("/etc/pam.d/"+service, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove("/etc/pam.d/" + service) })

	// n users with hardware-token seeds, imported the way a municipality
	// would.
	secrets := make([][]byte, n)
	var seedFile bytes.Buffer
	w := csv.NewWriter(&seedFile)
	w.Write([]string{"serial", "user", "seed", "digits", "period"})
	for i := range n {
		s, err := totp.NewSecret()
		if err != nil {
			b.Fatal(err)
		}
		secrets[i] = s
		w.Write([]string{fmt.Sprintf("BENCH%06d", i), fmt.Sprintf("bench%04d", i), totp.EncodeSecret(s), "6", "30"})
	}
	w.Flush()
	seeds := filepath.Join(dir, "seeds.csv")
	if err := os.WriteFile(seeds, seedFile.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	var imp mnguardv1.ImportTokensResponse
	c.ctlJSON(b, &imp, "users", "import", seeds)
	if int(imp.GetAssigned()) != n {
		b.Fatalf("imported %d users, want %d", imp.GetAssigned(), n)
	}

	var in bytes.Buffer
	for i := range n {
		code, err := totp.Generate(secrets[i], time.Now(), totp.Params{})
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&in, "bench%04d %s\n", i, code)
	}
	cmd := exec.Command(pamloop, service)
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b.ResetTimer()
	out, err := cmd.Output()
	b.StopTimer()
	if err != nil {
		b.Fatalf("pamloop: %v\n%s", err, stderr.String())
	}
	var lat []time.Duration
	failed := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var ret int
		var ns int64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &ret, &ns); err != nil {
			b.Fatalf("pamloop printed %q", sc.Text())
		}
		if ret != 0 {
			failed++
		}
		lat = append(lat, time.Duration(ns))
	}
	if len(lat) != n {
		b.Fatalf("pamloop answered %d logins of %d\n%s", len(lat), n, strings.TrimSpace(stderr.String()))
	}
	if failed > 0 {
		b.Fatalf("%d of %d logins with valid codes failed", failed, n)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(ms(pct(0.5)), "p50_ms")
	b.ReportMetric(ms(pct(0.99)), "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("login, PAM to answer through agent and collector: %d logins, p50 %s, p99 %s, max %s\n",
		n, pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
}
