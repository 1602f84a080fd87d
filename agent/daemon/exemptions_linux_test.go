//go:build linux

package daemon

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/agent/media"
	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stickMedia is a media platform with one USB stick attached; it records
// whether the stick is writable. The real enforcement on loop devices is
// agent/media's and e2e's; this proves the daemon's wiring.
type stickMedia struct {
	mu       sync.Mutex
	dev      media.Device
	writable bool
	changed  chan struct{}
}

func newStickMedia() *stickMedia {
	return &stickMedia{
		dev: media.Device{Name: "sdb", Bus: media.BusUSB, Reason: "usb ancestor 1-2", VendorID: "0781", ProductID: "5581",
			Serial: "4C530001230815117432", Model: "Cruzer Blade"},
		changed: make(chan struct{}, 16),
	}
}

func (s *stickMedia) set(w bool) {
	s.mu.Lock()
	ch := s.writable != w
	s.writable = w
	s.mu.Unlock()
	if ch {
		s.changed <- struct{}{}
	}
}

func (s *stickMedia) isWritable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writable
}

func (s *stickMedia) Scan(context.Context) ([]media.Device, error) { return []media.Device{s.dev}, nil }

func (s *stickMedia) Protect(_ context.Context, d media.Device) (media.Result, error) {
	s.set(false)
	return media.Result{Device: d, State: media.StateReadOnly}, nil
}

func (s *stickMedia) ProtectGently(ctx context.Context, d media.Device) (media.Result, error) {
	return s.Protect(ctx, d)
}

func (s *stickMedia) Release(_ context.Context, d media.Device) (media.Result, error) {
	s.set(true)
	return media.Result{Device: d, State: media.StateExempted}, nil
}

func (s *stickMedia) Watch(ctx context.Context, _ func(media.Notification)) error {
	<-ctx.Done()
	return nil
}

// pushCollector pushes exemption sets through Subscribe and accepts
// reports.
type pushCollector struct {
	mnguardv1.UnimplementedAgentServiceServer
	sets chan *mnguardv1.ExemptionSet
}

func (c *pushCollector) Subscribe(_ *mnguardv1.SubscribeRequest, stream grpc.ServerStreamingServer[mnguardv1.SubscribeResponse]) error {
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case set := <-c.sets:
			if err := stream.Send(&mnguardv1.SubscribeResponse{SentAt: timestamppb.Now(), Push: &mnguardv1.SubscribeResponse_Exemptions{Exemptions: set}}); err != nil {
				return err
			}
		}
	}
}

func (c *pushCollector) Report(_ context.Context, req *mnguardv1.ReportRequest) (*mnguardv1.ReportResponse, error) {
	var seqs []uint64
	for _, e := range req.GetEvents() {
		seqs = append(seqs, e.GetSeq())
	}
	return &mnguardv1.ReportResponse{AckedSeqs: seqs}, nil
}

// TestDaemonExemptions: a token pushed through the subscription makes only
// its stick writable within a second, the posture says so, a set without
// it makes the stick read-only within a second, a bad token changes
// nothing, and an offline code entered over the control socket applies at
// once.
func TestDaemonExemptions(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	col := &pushCollector{sets: make(chan *mnguardv1.ExemptionSet)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	mnguardv1.RegisterAgentServiceServer(srv, col)
	go srv.Serve(ln)
	defer srv.Stop()

	dir := t.TempDir()
	sp, err := spool.OpenWithOptions(filepath.Join(dir, state.SpoolFile), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := config.Default()
	cfg.StateDir = dir
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stick := newStickMedia()
	d := &Daemon{
		opts: Options{Config: cfg}, dir: state.Dir(dir), log: log, spool: sp, wake: make(chan struct{}, 1),
		id:   &state.Identity{Enrollment: state.Enrollment{TerminalID: testTerminal}, ExemptionKey: pub, OfflineKey: testOfflineKey},
		conn: conn, client: mnguardv1.NewAgentServiceClient(conn),
	}
	d.media = &media.Manager{Platform: stick, Mode: media.ModeEnforce, Emit: d.Emit, Logger: log, OnChange: d.poke}
	if err := d.initExemptions(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){
		func(ctx context.Context) { d.media.Run(ctx) }, func(ctx context.Context) { d.exempt.Run(ctx) },
		d.subscribeLoop, d.controlSocket,
	} {
		wg.Go(func() { f(ctx) })
	}
	defer func() { cancel(); wg.Wait() }()

	waitWritable := func(want bool, what string) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(5 * time.Second)
		for stick.isWritable() != want {
			select {
			case <-stick.changed:
			case <-time.After(10 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: stick writable = %v after 5 s", what, !want)
			}
		}
		return time.Since(start)
	}
	waitWritable(false, "at start")

	now := time.Now()
	token := func(id, serial string, key ed25519.PrivateKey) *mnguardv1.SignedExemption {
		se, err := exemption.Sign(key, &mnguardv1.Exemption{
			Id: id, TerminalId: testTerminal, Device: &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: serial},
			NotBefore: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(time.Hour)), DurationSeconds: 3600,
			Issuer: "suzuki", Ticket: "HD-1",
		})
		if err != nil {
			t.Fatal(err)
		}
		return se
	}
	// A twin's token and one signed by another key: the stick stays
	// read-only.
	_, otherKey, _ := ed25519.GenerateKey(nil)
	col.sets <- &mnguardv1.ExemptionSet{Exemptions: []*mnguardv1.SignedExemption{token("ex-twin", "OTHER", priv), token("ex-forged", "4C530001230815117432", otherKey)}}
	time.Sleep(300 * time.Millisecond)
	if stick.isWritable() {
		t.Fatal("writable by another device's exemption or a forged token")
	}

	col.sets <- &mnguardv1.ExemptionSet{Exemptions: []*mnguardv1.SignedExemption{token("ex-1", "4C530001230815117432", priv)}}
	if took := waitWritable(true, "after the push"); took > time.Second {
		t.Errorf("push to writable took %v, want < 1 s", took)
	}
	p := d.media.Posture()
	states := d.exempt.Posture(p.GetDevices())
	if len(states) == 0 || states[0].GetId() != "ex-1" || states[0].GetState() != exemptions.StateApplied || !slices.Equal(states[0].GetDevices(), []string{"sdb"}) {
		t.Errorf("posture exemptions = %v", states)
	}

	col.sets <- &mnguardv1.ExemptionSet{}
	if took := waitWritable(false, "after the revoking set"); took > time.Second {
		t.Errorf("revocation to read-only took %v, want < 1 s", took)
	}

	// Offline: challenge and the helpdesk's code over the control socket.
	sock := state.Dir(dir).Path(exemptions.SocketName)
	var resp exemptions.Response
	for i := 0; ; i++ {
		resp, err = exemptions.Call(ctx, sock, exemptions.Request{Op: exemptions.OpChallenge, Device: "0781:5581:4C530001230815117432", DurationSeconds: 1800})
		if err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the socket is served
	}
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := exemption.ParseDevice("0781:5581:4C530001230815117432")
	code, err := exemption.ResponseCode(testOfflineKey, testTerminal, resp.Challenge.Challenge, dev)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = exemptions.Call(ctx, sock, exemptions.Request{Op: exemptions.OpEnter, Code: code})
	if err != nil {
		t.Fatal(err)
	}
	if !stick.isWritable() || resp.Exemption.State != exemptions.StateApplied || !slices.Equal(resp.Exemption.Devices, []string{"sdb"}) {
		t.Fatalf("after enter: writable %v, %+v", stick.isWritable(), resp.Exemption)
	}

	evs, err := sp.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.GetType())
		if e.GetType() == exemptions.EventRefused && e.GetAttributes()["reason"] != "bad_signature" {
			t.Errorf("refused event for the forged token: %v", e.GetAttributes())
		}
	}
	sort.Strings(types)
	for _, want := range []string{exemptions.EventReceived, exemptions.EventRevoked, exemptions.EventRefused, exemptions.EventOfflineChallenge, exemptions.EventOfflineEntered} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s event among %v", want, types)
		}
	}
}
