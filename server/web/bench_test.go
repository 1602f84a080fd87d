package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The console benchmark's data: 10,000 terminals with posture and
// 1,000,000 events.
const (
	benchTerminals = 10000
	benchEvents    = 100 // per terminal
	// benchSeedVersion changes the cache key when the seed changes.
	benchSeedVersion = "1"
	// benchRequests is how often each page is fetched.
	benchRequests = 200
)

var benchNow = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// benchDir returns a data directory holding the seeded database: a copy of
// the one cached outside the work tree (keyed by the migrations and the
// seed), made first when there is none. Seeding takes minutes; the copy
// seconds.
func benchDir(b *testing.B) string {
	b.Helper()
	h := sha256.New()
	fmt.Fprint(h, benchSeedVersion, benchTerminals, benchEvents)
	migrations, _ := filepath.Glob("../store/migrations/sqlite/*.sql")
	slices.Sort(migrations)
	for _, m := range migrations {
		data, err := os.ReadFile(m)
		if err != nil {
			b.Fatal(err)
		}
		h.Write(data)
	}
	cacheRoot := os.Getenv("MNGUARD_BENCH_CACHE")
	if cacheRoot == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			b.Fatal(err)
		}
		cacheRoot = filepath.Join(dir, "mnguard-bench")
	}
	cache := filepath.Join(cacheRoot, "console-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(cache, "done")); err != nil {
		start := time.Now()
		tmp := cache + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			b.Fatal(err)
		}
		seed(b, tmp)
		if err := os.WriteFile(filepath.Join(tmp, "done"), nil, 0o600); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(cache)
		if err := os.Rename(tmp, cache); err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded %d terminals and %d events in %s (cached in %s)", benchTerminals, benchTerminals*benchEvents, time.Since(start).Round(time.Second), cache)
	}
	dir := b.TempDir()
	for _, name := range []string{"mnguard.db", "totp.key", "ca.crt", "ca.key"} {
		src, err := os.Open(filepath.Join(cache, name))
		if err != nil {
			b.Fatal(err)
		}
		dst, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			b.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// seed fills dir's database: terminals with a realistic posture (a tenth in
// monitor mode, a twentieth silent for an hour), 100 events each over the
// last 30 days, their compliance evaluated, and 30 days of history.
func seed(b *testing.B, dir string) {
	b.Helper()
	e := newEnvIn(b, dir, benchNow)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("bench token"))
	if err := e.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: "bench", Hash: sum[:], CreatedAt: benchNow.Add(-60 * 24 * time.Hour),
		ExpiresAt: benchNow.Add(time.Hour), Uses: benchTerminals, UsesLeft: benchTerminals}, store.NoAudit); err != nil {
		b.Fatal(err)
	}
	types := []string{"agent.start", "media.attached", "media.read_only_set", "media.detached", "media.drift_repaired", "exemption.received", "agent.stop"}
	for i := range benchTerminals {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		host := fmt.Sprintf("pc-%05d.city.lg.jp", i)
		enrolled := benchNow.Add(-time.Duration(30+i%30) * 24 * time.Hour)
		facts := &mnguardv1.HostFacts{Hostname: host, Os: "linux", Platform: "debian", PlatformVersion: "12.11", KernelVersion: "6.1.0-28-amd64",
			Arch: "x86_64", MachineId: strings.Repeat("ab", 16), AgentVersion: "v1.0.0"}
		hb, _ := proto.Marshal(facts)
		if err := e.st.Enroll(ctx, sum[:], enrolled, store.Terminal{ID: id, Host: hb, Hostname: host, State: store.StateActive, OfflineKey: make([]byte, 32)},
			store.Certificate{Serial: fmt.Sprintf("%032x", i+1), NotBefore: enrolled, NotAfter: enrolled.Add(90 * 24 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
		seen := benchNow.Add(-time.Duration(i%50) * time.Second)
		if i%20 == 7 {
			seen = benchNow.Add(-time.Hour)
		}
		p := benchPosture(i, facts, seen)
		pb, _ := proto.Marshal(p)
		r := store.Report{TerminalID: id, ReceivedAt: seen, Posture: pb, CollectedAt: seen}
		for s := range benchEvents {
			at := seen.Add(-time.Duration(benchEvents-s) * 30 * 24 * time.Hour / benchEvents)
			ev := &mnguardv1.Event{Seq: uint64(s + 1), Time: timestamppb.New(at), Type: types[(i+s)%len(types)], Severity: mnguardv1.Severity_SEVERITY_INFO,
				Message: fmt.Sprintf("event %d of %s", s+1, host), Attributes: map[string]string{"device": "sdb", "serial": fmt.Sprintf("SN%08d", i)}}
			data, _ := proto.Marshal(ev)
			r.Events = append(r.Events, store.Event{Seq: ev.Seq, Time: at, ReceivedAt: at, Type: ev.Type, Severity: int32(ev.Severity), Message: ev.Message, Data: data})
		}
		if _, err := e.st.SaveReport(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	if err := e.eval.EvaluateAll(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("first compliance evaluation of %d terminals: %s", benchTerminals, time.Since(start).Round(time.Millisecond))
	for d := range chartDays {
		day := benchNow.AddDate(0, 0, -d)
		if err := e.st.SaveComplianceDay(ctx, store.ComplianceDay{Day: day.Format(time.DateOnly), Compliant: 8500 + d, NonCompliant: 1000 - d, Stale: 500,
			Failing: map[string]int{store.CheckMedia: 1000, store.CheckFresh: 500}}); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.st.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchPosture is a terminal's posture as a real agent sends it: host
// facts, three interfaces, a dozen USB devices, one removable stick, five
// PAM services.
func benchPosture(i int, facts *mnguardv1.HostFacts, at time.Time) *mnguardv1.Posture {
	mode := "enforce"
	if i%10 == 3 {
		mode = "monitor"
	}
	p := &mnguardv1.Posture{
		CollectedAt: timestamppb.New(at), Host: facts, BootTime: timestamppb.New(at.Add(-72 * time.Hour)), UptimeSeconds: 72 * 3600,
		CpuCount: 4, CpuModel: "Intel(R) Core(TM) i5-8500 CPU @ 3.00GHz", MemoryTotalBytes: 16 << 30, AgentVersion: "v1.0.0",
		Interfaces: []*mnguardv1.NetworkInterface{
			{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}, Flags: []string{"up", "loopback"}, Mtu: 65536},
			{Name: "eno1", HardwareAddr: fmt.Sprintf("00:1b:21:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
				Addrs: []string{fmt.Sprintf("10.%d.%d.%d/16", 20+i/65536, i/256%256, i%256), "fe80::21b:21ff:fe00:1/64"}, Flags: []string{"up", "broadcast", "multicast"}, Mtu: 1500},
			{Name: "docker0", Addrs: []string{"172.17.0.1/16"}, Flags: []string{"broadcast", "multicast"}, Mtu: 1500},
		},
		Media: &mnguardv1.MediaPosture{Mode: mode, Healthy: mode == "enforce", UdevRuleInstalled: true, UdisksRuleInstalled: true,
			LastReconcile: timestamppb.New(at),
			Devices: []*mnguardv1.RemovableDevice{{Name: "sdb", Bus: "usb", VendorId: "0781", ProductId: "5581", Serial: fmt.Sprintf("4C5300%014d", i),
				Model: "Cruzer Blade", SizeBytes: 32 << 30, Partitions: []string{"sdb1"}, State: "read-only", Reason: "usb ancestor 1-2", Detail: "BLKROSET sdb, sdb1",
				AttachedAt: timestamppb.New(at.Add(-time.Hour))}}},
		Mfa: &mnguardv1.MfaPosture{Enforced: true, Socket: "/run/mnguard/pam.sock", SocketServing: true},
	}
	if mode == "monitor" {
		p.Media.UnhealthyReason = "media.mode is monitor"
	}
	for _, svc := range []string{"login", "gdm-password", "lightdm", "sshd", "sudo"} {
		p.Mfa.Services = append(p.Mfa.Services, &mnguardv1.PamService{Name: svc, Present: svc != "lightdm", MfaRequired: svc != "lightdm",
			ModuleLine: "required socket=/run/mnguard/pam.sock"})
	}
	for d := range 12 {
		p.UsbDevices = append(p.UsbDevices, &mnguardv1.UsbDevice{Bus: 1, Address: uint32(d + 2), VendorId: "8087", ProductId: fmt.Sprintf("%04x", d),
			Manufacturer: "Intel Corp.", Product: "USB hub", DeviceClass: 9, Interfaces: []*mnguardv1.UsbInterface{{Class: 9, ClassName: "hub"}}})
	}
	return p
}

// BenchmarkConsole prints the server-side p50 and p99 of the console's
// pages over 10,000 terminals with posture and 1,000,000 events in SQLite
// (target: p99 below 100 ms). Each page is fetched benchRequests times
// through the console's handler, session, CSRF and rendering included, TLS
// and the network not.
func BenchmarkConsole(b *testing.B) {
	dir := benchDir(b)
	e := newEnvIn(b, dir, benchNow)
	admin := e.addOperator("bench-admin", store.RoleAdmin)
	c := e.mustSignIn(admin)
	u, _ := url.Parse(e.srv.URL)
	cookies := c.hc.Jar.Cookies(u)
	h := e.console.Handler()
	last := (benchTerminals + defaultPageSize - 1) / defaultPageSize
	probe := fmt.Sprintf("%08x-0000-4000-8000-%012x", 4242, 4242)
	pages := []struct{ name, path string }{
		{"overview", "/"},
		{"terminals-first", "/terminals"},
		{"terminals-middle", fmt.Sprintf("/terminals?page=%d", last/2)},
		{"terminals-last", fmt.Sprintf("/terminals?page=%d", last)},
		{"terminals-last-by-state", fmt.Sprintf("/terminals?sort=state&dir=desc&page=%d", last)},
		{"terminals-non-compliant", "/terminals?state=non-compliant"},
		{"terminals-failing-fresh", "/terminals?check=fresh&sort=last_seen"},
		{"terminals-search-host", "/terminals?q=pc-04242"},
		{"terminals-search-ip", "/terminals?q=10.20.16.146"},
		{"terminals-search-serial", "/terminals?q=4c530000000000004242"},
		{"terminal", "/terminals/" + probe},
		{"events", "/events"},
		{"events-terminal", "/events?terminal=" + probe},
		{"events-type", "/events?type=media.detached"},
	}
	b.ResetTimer()
	for _, pg := range pages {
		b.Run(pg.name, func(b *testing.B) {
			var lat []time.Duration
			for range b.N {
				lat = lat[:0]
				for i := 0; i < benchRequests+5; i++ {
					req := httptest.NewRequest(http.MethodGet, "https://"+u.Host+pg.path, nil)
					for _, ck := range cookies {
						req.AddCookie(ck)
					}
					rec := httptest.NewRecorder()
					start := time.Now()
					h.ServeHTTP(rec, req)
					d := time.Since(start)
					if rec.Code != http.StatusOK {
						b.Fatalf("GET %s: %d\n%s", pg.path, rec.Code, rec.Body.String())
					}
					if i >= 5 { // warm-up
						lat = append(lat, d)
					}
					// Keep the session from going idle on the fake
					// clock: the benchmark's requests are instants.
					e.clock.Add(10 * time.Millisecond)
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
			fmt.Printf("console %-26s p50 %7.1f ms  p99 %7.1f ms  (%d requests)\n", pg.name, ms(p50), ms(p99), len(lat))
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
