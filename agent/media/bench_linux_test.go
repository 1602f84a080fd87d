package media

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// BenchmarkAttachToReadOnly measures what the removable-media issue names:
// from the kernel's uevent for a newly attached disk (the time the agent's
// listener received it) to the device verified read-only by Protect, over
// many attaches of a real loop device treated as removable by the test
// matcher. MNGUARD_BENCH_ATTACHES sets the count (default 200).
func BenchmarkAttachToReadOnly(b *testing.B) {
	testenv.RequireRoot(b, "loop devices")
	testenv.LockLoops(b)
	attaches := 200
	if v, err := strconv.Atoi(os.Getenv("MNGUARD_BENCH_ATTACHES")); err == nil && v > 0 {
		attaches = v
	}
	img := filepath.Join(b.TempDir(), "bench-stick.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type sample struct {
		dev string
		lat time.Duration
	}
	observed := make(chan sample, 64)
	detached := make(chan string, 64)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := &Manager{
		Platform: NewPlatform(Options{TreatAsRemovable: []string{"loop*"}, Logger: quiet}), Mode: ModeEnforce,
		ReconcileInterval: time.Hour, Logger: quiet,
		Observe: func(dev string, lat time.Duration) { observed <- sample{dev, lat} },
		Emit: func(typ string, _ mnguardv1.Severity, _ string, attrs map[string]string) {
			if typ == EventDetached {
				detached <- attrs["device"]
			}
		},
	}
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // the first scan done, the listener up

	var lat []time.Duration
	attached := "" // detached by the cleanup if a failure leaves it
	b.Cleanup(func() {
		if attached != "" {
			exec.Command("losetup", "-d", "/dev/"+attached).Run()
		}
	})
	b.ResetTimer()
	for i := 0; i < attaches; i++ {
		for len(observed) > 0 { // late duplicates of the previous attach
			<-observed
		}
		out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
		if err != nil {
			b.Fatalf("losetup: %v %s", err, out)
		}
		name := filepath.Base(strings.TrimSpace(string(out)))
		attached = name
	wait:
		for {
			select {
			case s := <-observed:
				if s.dev == name {
					lat = append(lat, s.lat)
					break wait
				}
			case <-time.After(5 * time.Second):
				b.Fatalf("attach %d: %s not protected within 5s", i, name)
			}
		}
		if ro, err := IsReadOnly("/dev/" + name); err != nil || !ro {
			b.Fatalf("attach %d: %s reported protected but BLKROGET says %v (%v)", i, name, ro, err)
		}
		if out, err := exec.Command("losetup", "-d", "/dev/"+name).CombinedOutput(); err != nil {
			b.Fatalf("losetup -d: %v %s", err, out)
		}
		attached = ""
		// Wait until the detach is handled before the next attach.
		for gone := false; !gone; {
			select {
			case dev := <-detached:
				gone = dev == name
			case <-time.After(5 * time.Second):
				b.Fatalf("attach %d: detach of %s not seen within 5s", i, name)
			}
		}
		// The loop device keeps its read-only flag into the next attach
		// (a real stick comes with a new device): clear it, so every
		// attach starts writable and is really protected.
		if err := SetReadOnly("/dev/"+name, false); err != nil {
			b.Fatalf("clear read-only on %s: %v", name, err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("attach-to-read-only: %d loop attaches, uevent received to verified read-only: p50 %s, p99 %s, max %s\n",
		len(lat), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}
