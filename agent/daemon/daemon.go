// Package daemon is the running agent: it reports posture and events to the
// collector, keeps a subscription open for pushed policy, renews its
// certificate, and writes its status for 'mnguard-agent status'.
package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/agent/media"
	"github.com/mnguard/mnguard/agent/netcheck"
	"github.com/mnguard/mnguard/agent/posture"
	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/netpolicy"
	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/retry"
	"github.com/mnguard/mnguard/internal/snapshot"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Options configure Run.
type Options struct {
	Config  config.Config
	Version string
	Logger  *slog.Logger
	// USB overrides the USB inventory (tests); nil is the platform's.
	USB posture.USBLister
	// CheckEvery is how often posture is collected to notice changes where
	// the OS cannot announce them (not Linux, or its notification sockets
	// failed); zero means 5 s. On Linux the posture is collected when the
	// OS announces a change (posture.Watcher), when the media, exemptions
	// or login gate say theirs changed, and at every report interval.
	CheckEvery time.Duration
	// Media overrides the removable-media platform (tests); nil is the
	// OS's.
	Media media.Platform
	// Now is the clock of offline login challenges and codes and the wall
	// clock of exemptions (tests); nil is time.Now.
	Now func() time.Time
	// Mono is the monotonic clock of exemptions (tests); nil is the
	// process's.
	Mono func() time.Duration
	// Network overrides the segment-isolation check's platform (tests);
	// nil is the OS's.
	Network netcheck.Platform
	// Enforcer overrides the network enforcement (tests); nil is the
	// OS's (nftables, Windows Firewall).
	Enforcer netcheck.Enforcer
}

// Daemon is one running agent.
type Daemon struct {
	opts Options
	dir  state.Dir
	log  *slog.Logger
	// server is the first collector address; servers all of them, in the
	// order they are tried (conn.go).
	server    string
	servers   []string
	cc        collectorConn
	collector *posture.Collector
	media     *media.Manager
	exempt    *exemptions.Manager
	network   *netcheck.Manager
	spool     *spool.Spool
	// collectorAddrs are always allowed by the network check.
	collectorAddrs collectorAddrs
	wake           chan struct{}
	// collectorBack wakes the reporter also while it waits out a retry
	// delay: the subscription reached the collector again.
	collectorBack chan struct{}
	// statusKick asks statusLoop to write status.json now.
	statusKick chan struct{}
	// resubscribe cuts the subscription's retry wait short: a report got
	// through, so the collector is back.
	resubscribe chan struct{}

	mu sync.Mutex
	id *state.Identity
	// conn is the connection to the collector address in use (conn.go),
	// client its AgentService.
	conn     *grpc.ClientConn
	client   mnguardv1.AgentServiceClient
	interval time.Duration
	policy   string
	st       state.Status
	// lost is how many spooled records were removed as undecodable as of
	// the last check (drops for room the spool reports itself).
	lost uint64
	// spoolWriteErr is the last error of an event the spool could not
	// store.
	spoolWriteErr string
	// gateServing says the login gate's socket accepts connections.
	gateServing bool
	// netPolicy is the network policy in force (nil: none), once
	// netPolicySet; netPolicyKey identifies the one last pushed (in force
	// or refused, once netPolicySeen), netPolicyErr why it was refused.
	netPolicy     *netpolicy.Policy
	netPolicySet  bool
	netPolicySeen bool
	netPolicyKey  string
	netPolicyErr  string
}

const (
	maxEventsPerReport = 500
	rpcTimeout         = 15 * time.Second
	// maxBackoff bounds the retry delay (full jitter, see retryWait) while
	// the collector is unreachable: a helpdesk exemption or a login waits
	// for the reconnection, so seconds, not minutes. Terminals come back
	// spread uniformly over up to 10 s after a collector restart.
	maxBackoff     = 10 * time.Second
	refusedBackoff = time.Minute
)

// Run runs the agent until ctx is cancelled; cancellation is a clean exit.
func Run(ctx context.Context, opts Options) error {
	d, err := newDaemon(opts)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

func newDaemon(opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = 5 * time.Second
	}
	dir := state.Dir(opts.Config.StateDir)
	id, err := dir.LoadIdentity()
	if err != nil {
		return nil, err
	}
	servers := []string(opts.Config.Server)
	if len(servers) == 0 {
		servers = []string{id.Server}
	}
	sp, err := spool.OpenWithOptions(dir.Path(state.SpoolFile), spool.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		opts: opts, dir: dir, log: log.With("terminal", id.TerminalID), server: servers[0], servers: servers, spool: sp,
		wake: make(chan struct{}, 1), collectorBack: make(chan struct{}, 1), statusKick: make(chan struct{}, 1), resubscribe: make(chan struct{}, 1), id: id, interval: time.Duration(opts.Config.ReportInterval),
	}
	d.cc = collectorConn{servers: servers, lookup: lookupIP, cache: tls.NewLRUClientSessionCache(sessionCacheSize)}
	d.collector = &posture.Collector{AgentVersion: opts.Version, PolicyVersion: d.policyVersion, USB: opts.USB, Logger: log}
	mc := opts.Config.Media
	plat := opts.Media
	if plat == nil {
		plat = media.NewPlatform(media.Options{TreatAsRemovable: mc.TreatAsRemovable, OnBusy: mc.OnBusy, Logger: log})
	}
	d.media = &media.Manager{
		Platform: plat, Mode: mc.Mode, ReconcileInterval: time.Duration(mc.ReconcileInterval), EndGrace: time.Duration(mc.ExemptionGrace),
		TreatAsRemovable: mc.TreatAsRemovable, Emit: d.Emit, Logger: log.With("part", "media"),
		Layers: media.PlatformLayers, OnChange: d.poke,
	}
	if err := d.initExemptions(); err != nil {
		sp.Close()
		return nil, err
	}
	d.newNetwork()
	if err := d.connect(); err != nil {
		sp.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) policyVersion() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy
}

func (d *Daemon) reportInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.interval
}

func (d *Daemon) agentClient() mnguardv1.AgentServiceClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// Emit records an event in the durable spool and wakes the reporter.
func (d *Daemon) Emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	e := &mnguardv1.Event{Time: timestamppb.Now(), Type: typ, Severity: sev, Message: msg, Attributes: attrs}
	if _, err := d.spool.Append(e); err != nil {
		// The spool counts it and stores a spool.events_dropped event
		// once it can write again.
		d.log.Error("event lost: spool append failed", "type", typ, "err", err)
		d.mu.Lock()
		d.spoolWriteErr = err.Error()
		d.mu.Unlock()
		d.statusChanged()
		return
	}
	d.poke()
	d.statusChanged()
}

// poke wakes the reporter.
func (d *Daemon) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Daemon) run(ctx context.Context) error {
	defer d.spool.Close()
	now := time.Now()
	d.mu.Lock()
	// Collector: the address connect chose, before run.
	d.st = state.Status{PID: os.Getpid(), StartedAt: now, UpdatedAt: now, ReportInterval: d.interval.String(), CertNotAfter: d.id.Cert.NotAfter, Collector: d.st.Collector}
	d.mu.Unlock()
	d.lost = d.spool.Corrupt()
	d.log.Info("agent starting", "server", strings.Join(d.servers, ","), "version", d.opts.Version, "state_dir", d.dir)
	if a := d.spool.SetAsideFile(); a.Path != "" {
		d.log.Error("the spool file was damaged: kept aside, a new spool started (its first event tells the collector)", "kept_as", a.Path, "reason", a.Reason)
	}
	d.Emit("agent.start", mnguardv1.Severity_SEVERITY_INFO, "agent started", map[string]string{"version": d.opts.Version})

	var wg sync.WaitGroup
	runMedia := func(ctx context.Context) {
		if err := d.media.Run(ctx); err != nil {
			d.log.Error("removable-media enforcement stopped", "err", err)
		}
	}
	runExemptions := func(ctx context.Context) {
		if err := d.exempt.Run(ctx); err != nil {
			d.log.Error("exemptions stopped", "err", err)
		}
	}
	for _, f := range []func(context.Context){runMedia, runExemptions, d.runNetwork, d.controlSocket, d.loginGate, d.reportLoop, d.subscribeLoop, d.renewLoop, d.statusLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	<-ctx.Done()
	wg.Wait()

	// Say goodbye if the collector is there; the event stays spooled if not.
	d.Emit("agent.stop", mnguardv1.Severity_SEVERITY_INFO, "agent stopped", nil)
	flushCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.send(flushCtx, nil, 0); err != nil {
		d.log.Warn("final report not delivered; events stay spooled", "err", err)
	}
	d.mu.Lock()
	d.st.Connected, d.st.Stopped = false, true
	d.mu.Unlock()
	d.writeStatus()
	d.closeConn()
	d.log.Info("agent stopped")
	return nil
}

// reportLoop collects posture when something changed (see
// Options.CheckEvery) and reports it at start, when it changed, and at
// least every report interval; spooled events go out with the next report
// or as soon as they are emitted.
func (d *Daemon) reportLoop(ctx context.Context) {
	var lastSent time.Time
	var lastFP []byte
	failures := 0
	watch := d.watchChanges(ctx)
	defer watch.stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if !d.waitToReport(ctx, timer, failures) {
			return
		}
		d.reportLoss()
		p, err := d.collector.Collect(ctx)
		if err != nil {
			d.log.Warn("posture collection failed", "err", err)
		}
		if p != nil {
			p.Media = d.media.Posture()
			p.Media.Exemptions = d.exempt.Posture(p.Media.GetDevices())
			var files []string
			p.Mfa, files = d.mfaPostureFiles()
			watch.files(files)
			p.Network = d.networkPosture()
		}
		fp := fingerprint(p)
		due := p != nil && (lastSent.IsZero() || !bytes.Equal(fp, lastFP) || time.Since(lastSent) >= d.reportInterval())
		var gen uint64
		switch {
		case due:
			// Kept in the spool until the collector acknowledges it:
			// also across a restart of the agent.
			if gen, err = d.spool.SetPosture(p); err != nil {
				d.log.Warn("posture snapshot not kept in the spool; sent from memory", "err", err)
			}
		default:
			// A snapshot not acknowledged yet (the collection failed, or
			// the agent restarted): send it again.
			p, gen = nil, 0
			if kept, g, err := d.spool.LatestPosture(); err == nil && kept != nil {
				p, gen = kept, g
			}
		}
		next := d.opts.CheckEvery
		if watch.ok() {
			// The OS announces changes: look again when the report is due
			// (but not sooner than a poll would while none got through).
			next = max(d.reportInterval()-time.Since(lastSent), d.opts.CheckEvery)
		}
		if err := d.send(ctx, p, gen); err != nil {
			if ctx.Err() != nil {
				return
			}
			next = retryWait(failures)
			failures++
			if refused(err) {
				next = refusedBackoff
				d.log.Error("collector refuses this terminal", "err", err)
			} else {
				d.log.Warn("report failed; will retry", "err", err, "retry_in", next)
			}
		} else {
			if failures > 0 {
				// The collector is back: do not let the subscription
				// (exemptions, revocations) wait out its own retry delay.
				select {
				case d.resubscribe <- struct{}{}:
				default:
				}
			}
			failures = 0
			if due {
				lastSent, lastFP = time.Now(), fp
				if watch.ok() {
					next = d.reportInterval()
				}
			}
		}
		timer.Reset(next)
	}
}

// waitToReport waits until the reporter should send: the timer fired, an
// event or a change woke it, or the subscription reached the collector
// again. While a retry delay runs (failures > 0), new events only wait in
// the spool: a collector whose database is down must not get a report for
// every event of every terminal. It returns false when ctx ends.
func (d *Daemon) waitToReport(ctx context.Context, timer *time.Timer, failures int) bool {
	wake := d.wake
	if failures > 0 {
		wake = nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	case <-wake:
	case <-d.collectorBack:
	}
	return true
}

// changeWatch is the reporter's posture.Watcher; its zero value (no
// watcher) says the reporter polls.
type changeWatch struct {
	w      *posture.Watcher
	failed atomic.Bool
	cancel context.CancelFunc
	done   chan struct{}
	log    *slog.Logger
	err    string // the last WatchFiles error, logged once
}

// watchChanges starts a posture.Watcher that wakes the reporter.
func (d *Daemon) watchChanges(ctx context.Context) *changeWatch {
	cw := &changeWatch{log: d.log}
	w, err := posture.NewWatcher(func(string) { d.poke() })
	if err != nil {
		d.log.Info("no change notifications from the OS: posture is polled", "every", d.opts.CheckEvery, "err", err)
		return cw
	}
	cw.w, cw.done = w, make(chan struct{})
	ctx, cw.cancel = context.WithCancel(ctx)
	go func() {
		defer close(cw.done)
		if err := w.Run(ctx); err != nil {
			cw.failed.Store(true)
			d.log.Error("change notifications stopped: posture is polled", "every", d.opts.CheckEvery, "err", err)
			d.poke()
		}
	}()
	return cw
}

// ok says the OS announces changes.
func (cw *changeWatch) ok() bool { return cw.w != nil && !cw.failed.Load() }

// files watches the files the posture was judged from; again after every
// collection, so that a directory created since (watched for in its
// parent until then) is now watched itself.
func (cw *changeWatch) files(paths []string) {
	if !cw.ok() {
		return
	}
	err := cw.w.WatchFiles(paths)
	if err != nil && err.Error() != cw.err {
		cw.log.Warn("some PAM files are not watched: their changes show at the next report", "err", err)
	}
	cw.err = ""
	if err != nil {
		cw.err = err.Error()
	}
}

func (cw *changeWatch) stop() {
	if cw.w != nil {
		cw.cancel()
		<-cw.done
	}
}

// fingerprint is snapshot.Fingerprint without the exemptions' remaining
// time, which changes every second an exemption is in force, and without
// the network scan's time and socket count, which change at every scan:
// the posture is reported when something else changed or at the interval.
func fingerprint(p *mnguardv1.Posture) []byte {
	if len(p.GetMedia().GetExemptions()) == 0 && p.GetNetwork() == nil {
		return snapshot.Fingerprint(p)
	}
	c := proto.Clone(p).(*mnguardv1.Posture)
	for _, e := range c.GetMedia().GetExemptions() {
		e.RemainingSeconds = 0
	}
	zeroScanClock(c)
	return snapshot.Fingerprint(c)
}

// mfaPosture is the posture's MFA section: the PAM stacks as they are now
// and whether the login gate serves its socket.
func (d *Daemon) mfaPosture() *mnguardv1.MfaPosture {
	p, _ := d.mfaPostureFiles()
	return p
}

// mfaPostureFiles is mfaPosture and the files it was judged from.
func (d *Daemon) mfaPostureFiles() (*mnguardv1.MfaPosture, []string) {
	d.mu.Lock()
	serving := d.gateServing
	d.mu.Unlock()
	return mfaPostureFiles(d.opts.Config.MFA, serving)
}

// reportLoss stores the spool's loss event for events it could not write
// (disk full) once it can, and raises an event when records were removed
// from the spool as undecodable since the last check: the collector then
// knows the gap in sequence numbers is real. Events dropped for room the
// spool reports itself (spool.events_dropped).
func (d *Daemon) reportLoss() {
	if err := d.spool.FlushLoss(); err != nil {
		d.log.Warn("spool still cannot be written: the loss is reported once it can", "err", err)
	}
	corrupt := d.spool.Corrupt()
	if corrupt > d.lost {
		lost := corrupt - d.lost
		d.lost = corrupt
		d.log.Error("events lost from the spool", "count", lost, "corrupt_total", corrupt)
		d.Emit("agent.events_lost", mnguardv1.Severity_SEVERITY_ALERT,
			fmt.Sprintf("%d events were lost before delivery (damaged spool records)", lost),
			map[string]string{"count": strconv.FormatUint(lost, 10), "corrupt_total": strconv.FormatUint(corrupt, 10)})
	}
}

// send delivers posture (may be nil; gen is its generation in the spool,
// 0 if it is not kept there) and spooled events, repeatedly until the
// spool is drained or a call fails. The collector answers only after its
// commit: what it acknowledges is stored, and only that leaves the spool.
// A failure that means the collector is gone moves to the next address
// (failover); the caller waits before the next attempt.
func (d *Daemon) send(ctx context.Context, p *mnguardv1.Posture, gen uint64) error {
	for {
		evs, err := d.spool.Pending(maxEventsPerReport)
		if err != nil {
			d.log.Error("spool read failed", "err", err)
		}
		if p == nil && len(evs) == 0 {
			return nil
		}
		client, cgen, _ := d.current()
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		var pr peer.Peer
		resp, err := client.Report(rctx, &mnguardv1.ReportRequest{Posture: p, Events: evs}, grpc.Peer(&pr))
		cancel()
		d.notePeer(pr.Addr)
		if err != nil {
			d.noteError(fmt.Errorf("report: %s", status.Convert(err).Message()))
			if ctx.Err() == nil && collectorGone(err) {
				d.failover(cgen, err)
			}
			return err
		}
		if err := d.spool.Ack(resp.GetAckedSeqs()); err != nil {
			d.log.Error("spool ack failed", "err", err)
		}
		if p != nil {
			if err := d.spool.AckPosture(gen); err != nil {
				d.log.Error("spool posture ack failed", "err", err)
			}
		}
		d.mu.Lock()
		d.st.LastReportAt = time.Now()
		d.st.LastError = ""
		d.mu.Unlock()
		d.statusChanged()
		if p != nil {
			d.log.Debug("posture reported", "events", len(evs))
		}
		p = nil
		if len(evs) < maxEventsPerReport {
			return nil
		}
	}
}

func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}

func (d *Daemon) noteError(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.LastError, d.st.LastErrorAt = err.Error(), time.Now()
	d.statusChanged()
}

// subscribeLoop keeps the Subscribe stream open and applies pushed policy.
func (d *Daemon) subscribeLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		err := d.subscribe(ctx)
		d.mu.Lock()
		if d.st.Connected {
			// The stream was up: start the backoff over.
			failures = 0
		}
		d.st.Connected = false
		d.mu.Unlock()
		d.statusChanged()
		if ctx.Err() != nil {
			return
		}
		wait := retryWait(failures)
		failures++
		if refused(err) {
			wait = refusedBackoff
			d.log.Error("collector refuses this terminal's subscription", "err", err)
		} else {
			d.log.Warn("subscription lost; reconnecting", "err", err, "retry_in", wait)
		}
		d.noteError(fmt.Errorf("subscribe: %s", status.Convert(err).Message()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-d.resubscribe:
		}
	}
}

func (d *Daemon) subscribe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client, gen, ep := d.current()
	if conn := d.currentConn(); conn != nil {
		// A retry connects now, not when gRPC's own backoff ends: the
		// wait in subscribeLoop is the only one (see retry.AwaitReady).
		retry.AwaitReady(ctx, conn, retry.HandshakeTimeout)
	}
	gone := func(err error) error {
		if ctx.Err() == nil && collectorGone(err) {
			d.failover(gen, err)
		}
		return err
	}
	stream, err := client.Subscribe(ctx, &mnguardv1.SubscribeRequest{PolicyVersion: d.policyVersion()})
	if err != nil {
		return gone(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return gone(err)
		}
		d.mu.Lock()
		connected := !d.st.Connected
		if connected {
			d.st.Connected, d.st.ConnectedSince = true, time.Now()
		}
		d.mu.Unlock()
		if connected {
			d.statusChanged()
			d.log.Info("connected to collector", "server", ep.String())
			// The collector is back: deliver what was spooled meanwhile
			// (refused logins among it) now, not at the next retry.
			select {
			case d.collectorBack <- struct{}{}:
			default:
			}
		}
		if pol := msg.GetPolicy(); pol != nil {
			d.applyPolicy(pol)
		}
		if set := msg.GetExemptions(); set != nil {
			d.exempt.ApplySet(set)
		}
	}
}

func (d *Daemon) applyPolicy(p *mnguardv1.Policy) {
	iv := time.Duration(p.GetReportIntervalSeconds()) * time.Second
	d.mu.Lock()
	changed := d.policy != p.GetVersion()
	d.policy = p.GetVersion()
	if iv >= time.Second {
		d.interval = iv
		d.st.ReportInterval = iv.String()
	}
	d.st.PolicyVersion = p.GetVersion()
	d.mu.Unlock()
	if iv >= time.Second && d.network != nil {
		d.network.SetInterval(iv)
	}
	d.applyNetworkPolicy(p.GetNetwork())
	d.statusChanged()
	if changed {
		d.log.Info("policy applied", "version", p.GetVersion(), "report_interval", iv)
		d.poke()
	}
}

// renewLoop renews the certificate when a third of its lifetime is left.
func (d *Daemon) renewLoop(ctx context.Context) {
	r := pki.Renewal{Jitter: time.Minute}
	for {
		d.mu.Lock()
		cert := d.id.Cert
		d.mu.Unlock()
		if r.Jitter > cert.NotAfter.Sub(cert.NotBefore)/10 {
			r.Jitter = cert.NotAfter.Sub(cert.NotBefore) / 10
		}
		wait := time.Until(r.Due(cert, time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := d.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.noteError(err)
			// Retry sooner as the end nears; an expired certificate cannot
			// be renewed (the collector refuses it), so only slowly then.
			left := time.Until(cert.NotAfter)
			retry := min(max(left/10, time.Second), 5*time.Minute)
			if left <= 0 {
				retry = 5 * time.Minute
			}
			d.log.Error("certificate renewal failed", "err", err, "expires", cert.NotAfter, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

func (d *Daemon) renew(ctx context.Context) error {
	d.mu.Lock()
	id := d.id
	d.mu.Unlock()
	csr, err := pki.NewCSR(id.Key, id.TerminalID)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := d.agentClient().Renew(rctx, &mnguardv1.RenewRequest{CsrDer: csr})
	if err != nil {
		return fmt.Errorf("renew: %s", status.Convert(err).Message())
	}
	cert, err := x509.ParseCertificate(resp.GetCertificateDer())
	if err != nil {
		return fmt.Errorf("renew: certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(id.CA)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("renew: certificate does not verify: %w", err)
	}
	if err := pki.CheckKeyPair(cert, id.Key); err != nil || cert.Subject.CommonName != id.TerminalID {
		return errors.New("renew: certificate is not for this terminal's key")
	}
	if err := d.dir.SaveCertificate(cert); err != nil {
		return err
	}
	next := *id
	next.Cert = cert
	d.mu.Lock()
	d.id = &next
	d.st.CertNotAfter = cert.NotAfter
	d.mu.Unlock()
	d.statusChanged()
	d.log.Info("certificate renewed", "not_after", cert.NotAfter)
	d.Emit("agent.certificate_renewed", mnguardv1.Severity_SEVERITY_INFO, "client certificate renewed", map[string]string{"not_after": cert.NotAfter.UTC().Format(time.RFC3339)})
	return d.connect()
}

// Status file timing: 'mnguard-agent status' takes a status.json older
// than 30 s for an agent that is not running.
const (
	// statusEvery is the longest time between two writes, the sign of
	// life.
	statusEvery = 10 * time.Second
	// statusGap is the shortest: a burst of events writes it once a second.
	statusGap = time.Second
)

// statusLoop keeps status.json current: written when something in it
// changed (statusChanged) and every statusEvery.
func (d *Daemon) statusLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.statusKick:
		}
		d.writeStatus()
		t.Reset(statusEvery)
		select {
		case <-ctx.Done():
			return
		case <-time.After(statusGap):
		}
	}
}

// statusChanged has status.json written soon.
func (d *Daemon) statusChanged() {
	select {
	case d.statusKick <- struct{}{}:
	default:
	}
}

func (d *Daemon) writeStatus() {
	n, err := d.spool.Len()
	if err != nil {
		d.log.Warn("spool length", "err", err)
	}
	ss := d.spool.Stats()
	d.mu.Lock()
	d.st.UpdatedAt = time.Now()
	d.st.PendingEvents = n
	d.st.Spool = &state.SpoolStatus{
		Bytes: ss.Bytes, MaxBytes: ss.MaxBytes, MaxEvents: ss.MaxEvents, PostureKept: ss.PostureKept,
		Dropped: ss.Dropped, PostureDropped: ss.PostureDropped, Corrupt: ss.Corrupt,
		WriteFailed: ss.WriteFailed, WriteError: d.spoolWriteErr, SetAside: ss.SetAside.Path, SetAsideReason: ss.SetAside.Reason,
	}
	st := d.st
	d.mu.Unlock()
	if err := d.dir.WriteStatus(st); err != nil {
		d.log.Warn("write status", "err", err)
	}
}

// initExemptions loads the exemptions held and lets the media manager ask
// them which device may be writable.
func (d *Daemon) initExemptions() error {
	ex, err := exemptions.New(exemptions.Options{
		StateDir: d.opts.Config.StateDir, TerminalID: d.id.TerminalID, VerifyKey: d.id.ExemptionKey, OfflineKey: d.id.OfflineKey,
		Emit: d.Emit, Logger: d.log.With("part", "exemptions"), Now: d.opts.Now, Mono: d.opts.Mono,
		Apply:    d.applyExemptions,
		Attached: func() []*mnguardv1.RemovableDevice { return d.media.Posture().GetDevices() },
	})
	if err != nil {
		return err
	}
	d.exempt = ex
	d.media.Exempt = func(dev media.Device) (string, bool) {
		return ex.Allows(dev.VendorID, dev.ProductID, dev.Serial)
	}
	return nil
}

// applyExemptions re-evaluates every removable device after the exemptions
// in force changed, and reports the new posture.
func (d *Daemon) applyExemptions(ctx context.Context) {
	d.media.Refresh(ctx)
	d.poke()
}

// controlSocket serves 'mnguard-agent exemption' on the state directory's
// control socket until ctx ends.
func (d *Daemon) controlSocket(ctx context.Context) {
	path := exemptions.ControlAddress(string(d.dir))
	srv := &exemptions.ControlServer{Path: path, Handle: d.exempt.Handle, Logger: d.log.With("part", "exemptions")}
	if err := srv.Serve(ctx); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			d.log.Info("no exemption control socket on this OS: 'mnguard-agent exemption challenge|enter' are unavailable", "err", err)
			return
		}
		d.log.Error("exemption control socket stopped: offline exemption codes cannot be entered", "socket", path, "err", err)
		d.noteError(err)
	}
}
