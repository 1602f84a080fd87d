package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// config is the load generator's command line, validated.
type config struct {
	agents       int
	interval     time.Duration // 0: idle, no reports after the connection
	duration     time.Duration
	warmup       time.Duration // reports run, not yet counted
	servers      []string
	token        string
	caPin        string
	events       int
	sourceIPs    []netip.Addr
	stateDir     string
	hostPrefix   string
	serverPID    int
	output       string // "text" or "json"
	connectPar   int
	enrollPar    int
	baseline     bool
	baselineDir  string
	reportTimout time.Duration
}

// Bounds of the flags: beyond them a run is a typo, not a test.
const (
	maxAgents         = 1_000_000
	maxEventsPerRpt   = 1000
	minInterval       = 100 * time.Millisecond
	defaultConnectPar = 256
)

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("mnguard-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	var servers, sourceIPs string
	fs.IntVar(&c.agents, "agents", 0, "number of simulated terminals (required)")
	fs.DurationVar(&c.interval, "interval", 60*time.Second, "report interval of each terminal; 0 = idle (connect and subscribe, no reports)")
	fs.DurationVar(&c.duration, "duration", time.Minute, "how long to run once every terminal is connected; 0 = until interrupted")
	fs.DurationVar(&c.warmup, "warmup", 0, "how long the terminals run, reports and all, before the measured --duration starts (the collector's work after the connections, the first reports, settle)")
	fs.StringVar(&servers, "server", "", "collector address HOST:PORT, or several separated by commas (terminal i starts at address i mod n and fails over to the next)")
	fs.StringVar(&c.token, "token", "", "enrollment token with at least --agents uses (not needed when --state-dir holds every identity)")
	fs.StringVar(&c.caPin, "ca-pin", "", "the collector CA's pin, sha256:HEX (as 'mnguard-server init' prints it)")
	fs.IntVar(&c.events, "events-per-report", 1, "events in each report")
	fs.StringVar(&sourceIPs, "source-ips", "", "local addresses to dial from, e.g. 127.0.0.2-127.0.0.250 (terminal i uses address i mod n); empty: the kernel's choice")
	fs.StringVar(&c.stateDir, "state-dir", "", "directory caching the enrolled identities, so a rerun does not enroll again; empty: enroll every run")
	fs.StringVar(&c.hostPrefix, "host-prefix", "loadgen", "hostname prefix of the simulated terminals (hostname PREFIX-INDEX)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "PID of the collector whose RSS and CPU to print; 0 = the process listening on the first --server address, if found")
	fs.StringVar(&c.output, "output", "text", "text, or json (one object a line)")
	fs.IntVar(&c.connectPar, "connect-concurrency", defaultConnectPar, "terminals connecting at once during the first connection")
	fs.IntVar(&c.enrollPar, "enroll-concurrency", 16, "enrollments at once")
	fs.BoolVar(&c.baseline, "baseline", false, "talk to 'mnguard-loadgen baseline-server' instead: one health Watch stream per terminal, a health Check as the report")
	fs.StringVar(&c.baselineDir, "baseline-dir", "", "with --baseline: the baseline server's --data-dir, whose CA signs the terminals' certificates")
	fs.DurationVar(&c.reportTimout, "report-timeout", 30*time.Second, "deadline of one Report")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.agents < 1 || c.agents > maxAgents {
		return nil, fmt.Errorf("--agents %d: want 1 to %d", c.agents, maxAgents)
	}
	if c.interval < 0 || (c.interval > 0 && c.interval < minInterval) {
		return nil, fmt.Errorf("--interval %s: want 0 (idle) or at least %s", c.interval, minInterval)
	}
	if c.duration < 0 {
		return nil, fmt.Errorf("--duration %s is negative", c.duration)
	}
	if c.warmup < 0 {
		return nil, fmt.Errorf("--warmup %s is negative", c.warmup)
	}
	if c.events < 0 || c.events > maxEventsPerRpt {
		return nil, fmt.Errorf("--events-per-report %d: want 0 to %d", c.events, maxEventsPerRpt)
	}
	if servers == "" {
		return nil, errors.New("--server missing: the collector's HOST:PORT")
	}
	for s := range strings.SplitSeq(servers, ",") {
		s = strings.TrimSpace(s)
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("--server %q is not HOST:PORT", s)
		}
		c.servers = append(c.servers, s)
	}
	var err error
	if c.sourceIPs, err = parseSourceIPs(sourceIPs); err != nil {
		return nil, err
	}
	switch c.output {
	case "text", "json":
	default:
		return nil, fmt.Errorf("--output %q: want text or json", c.output)
	}
	if c.connectPar < 1 || c.enrollPar < 1 {
		return nil, errors.New("--connect-concurrency and --enroll-concurrency must be at least 1")
	}
	if c.serverPID < 0 {
		return nil, fmt.Errorf("--server-pid %d is negative", c.serverPID)
	}
	if c.reportTimout <= 0 {
		return nil, fmt.Errorf("--report-timeout %s: want more than 0", c.reportTimout)
	}
	if strings.ContainsAny(c.hostPrefix, "/\\ \t\n") || c.hostPrefix == "" {
		return nil, fmt.Errorf("--host-prefix %q: want a non-empty name without spaces or slashes", c.hostPrefix)
	}
	if c.baseline {
		if c.baselineDir == "" {
			return nil, errors.New("--baseline needs --baseline-dir, the baseline server's --data-dir")
		}
		return c, nil
	}
	if c.caPin == "" {
		return nil, errors.New("--ca-pin missing: the collector CA's pin, sha256:HEX")
	}
	if c.caPin, err = pki.ParsePin(c.caPin); err != nil {
		return nil, fmt.Errorf("--ca-pin: %w", err)
	}
	return c, nil
}
