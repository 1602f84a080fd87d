// Package collector runs the mnguard collector: it initialises the data
// directory and serves the gRPC API and the HTTPS endpoints over one store.
package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/version"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/compliance"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/report"
	"github.com/mnguard/mnguard/server/store"
	"github.com/mnguard/mnguard/server/web"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Files in the data directory.
const (
	DBFile         = "mnguard.db"
	SigningKeyFile = "signing.key"
	AdminTokenFile = "admin.token"
	// AdminPasswordFile and AdminTOTPFile hold the first admin's console
	// sign-in: its password and its TOTP secret (base32).
	AdminPasswordFile = "admin.password"
	AdminTOTPFile     = "admin.totp"
	// TOTPKeyFile seals the TOTP secrets of login users; losing it loses
	// every enrollment.
	TOTPKeyFile = "totp.key"
)

// InitResult says what Init found or made.
type InitResult struct {
	CAPin string
	// AdminToken is set only when Init created it (first start), with
	// the first admin's password and TOTP secret.
	AdminToken        string
	AdminTokenFile    string
	AdminPassword     string
	AdminPasswordFile string
	AdminTOTPSecret   string
	AdminTOTPFile     string
	Created           bool
}

// Init prepares dataDir: the CA, the exemption-signing key, the database,
// the TOTP sealing key (totp.key, 0600) and, on an empty database, a first
// admin API token written to dataDir/admin.token (0600). It is idempotent.
// A missing totp.key is created only while the database has no TOTP users:
// theirs would be lost, so Init refuses instead.
func Init(ctx context.Context, dataDir string, now time.Time) (InitResult, error) {
	return InitDB(ctx, dataDir, "", now)
}

// InitDB is Init with the database at dbURL (store.Open: "sqlite:PATH" or
// "postgres://…"); "" is the SQLite file DBFile in dataDir. The keys stay in
// dataDir either way.
func InitDB(ctx context.Context, dataDir, dbURL string, now time.Time) (InitResult, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return InitResult{}, fmt.Errorf("create data directory: %w", err)
	}
	authority, caCreated, err := ca.LoadOrCreate(dataDir, now)
	if err != nil {
		return InitResult{}, err
	}
	if _, _, err := ca.LoadOrCreateSigningKey(filepath.Join(dataDir, SigningKeyFile)); err != nil {
		return InitResult{}, err
	}
	st, err := openStore(ctx, dataDir, dbURL)
	if err != nil {
		return InitResult{}, err
	}
	defer st.Close()
	if err := ensureTOTPKey(ctx, st, filepath.Join(dataDir, TOTPKeyFile)); err != nil {
		return InitResult{}, err
	}
	res := InitResult{CAPin: authority.Pin(), Created: caCreated}
	has, err := st.HasOperators(ctx)
	if err != nil {
		return InitResult{}, err
	}
	if has {
		return res, nil
	}
	key, err := logins.LoadKey(filepath.Join(dataDir, TOTPKeyFile))
	if err != nil {
		return InitResult{}, err
	}
	ops, err := operators.New(st, key, operators.DefaultPolicy())
	if err != nil {
		return InitResult{}, err
	}
	tok, err := api.NewOperatorToken()
	if err != nil {
		return InitResult{}, err
	}
	// 160 random bits in 32 characters, like the API token.
	password, err := api.NewToken("")
	if err != nil {
		return InitResult{}, err
	}
	const actor = "mnguard-server init"
	_, secret, err := ops.Add(ctx, "admin", store.RoleAdmin, password, actor, store.AuditEntry{Time: now, Actor: actor})
	if err != nil {
		return InitResult{}, fmt.Errorf("first admin: %w", err)
	}
	files := map[string]string{AdminTokenFile: tok, AdminPasswordFile: password, AdminTOTPFile: secret.Secret}
	for _, name := range []string{AdminTokenFile, AdminPasswordFile, AdminTOTPFile} {
		if err := pki.WriteFileAtomic(filepath.Join(dataDir, name), []byte(files[name]+"\n"), 0o600); err != nil {
			return InitResult{}, fmt.Errorf("write %s: %w", name, err)
		}
	}
	path := filepath.Join(dataDir, AdminTokenFile)
	if err := st.CreateOperatorToken(ctx, store.OperatorToken{ID: "admin-initial", Name: "admin", Hash: api.HashToken(tok), CreatedAt: now},
		store.AuditEntry{Time: now, Actor: actor, Action: "operator_token.create", Target: "admin-initial", Detail: "first admin API token, written to " + path}); err != nil {
		return InitResult{}, err
	}
	res.AdminToken, res.AdminTokenFile, res.Created = tok, path, true
	res.AdminPassword, res.AdminPasswordFile = password, filepath.Join(dataDir, AdminPasswordFile)
	res.AdminTOTPSecret, res.AdminTOTPFile = secret.Secret, filepath.Join(dataDir, AdminTOTPFile)
	return res, nil
}

// openStore opens the database at dbURL, or the SQLite file in dataDir
// when it is "".
func openStore(ctx context.Context, dataDir, dbURL string) (*store.DB, error) {
	if dbURL == "" {
		return store.OpenSQLite(ctx, filepath.Join(dataDir, DBFile))
	}
	return store.Open(ctx, dbURL)
}

// ensureTOTPKey checks the TOTP key at path, or creates it if it is
// missing and no user's secret depends on it.
func ensureTOTPKey(ctx context.Context, st store.Store, path string) error {
	_, err := logins.LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	users, err := st.Users(ctx)
	if err != nil {
		return err
	}
	if n := len(users); n > 0 {
		return fmt.Errorf("%s is missing, but the database holds %d TOTP users whose secrets are sealed with it: restore it from a backup of the data directory (a new key cannot open their secrets)", path, n)
	}
	return logins.CreateKey(path)
}

// Config configures Serve.
type Config struct {
	DataDir string
	// DB is the database URL (store.Open): "postgres://…" for replicas
	// sharing one PostgreSQL, "sqlite:PATH"; "" is the SQLite file DBFile
	// in DataDir. The keys are read from DataDir either way.
	DB         string
	GRPCListen string
	HTTPListen string
	// ServerNames are extra DNS names or IPs for the server certificate,
	// besides the host name, localhost and the listen addresses.
	ServerNames []string
	// AdvertiseAddrs are addresses agents reach the collector at, pushed
	// with the network policy as always allowed, besides the gRPC
	// listener's own address when it names one (not 0.0.0.0 or ::).
	AdvertiseAddrs []netip.Addr
	CertValidity   time.Duration
	ReportInterval time.Duration
	// ExemptionMaxDuration bounds the exemptions operators issue (0: 8 h);
	// ExemptionDefaultDuration is what one gets that names no duration
	// (0: 1 h).
	ExemptionMaxDuration     time.Duration
	ExemptionDefaultDuration time.Duration
	// Logins is the TOTP login policy; nil means logins.DefaultPolicy().
	// Its Now and Logger are ignored.
	Logins *logins.Policy
	// HTTPCertFile and HTTPKeyFile, when set, are the console's TLS
	// certificate and key (PEM) instead of one from the collector's CA:
	// one the operators' browsers already trust.
	HTTPCertFile, HTTPKeyFile string
	// Location is the time zone of the console and the reports
	// (default Asia/Tokyo).
	Location *time.Location
	// MinAgentVersion, when set, is the oldest agent version the
	// compliance check accepts; otherwise the collector's own version.
	MinAgentVersion string
	// WebIdleTimeout and WebSessionMax end console sessions (defaults 15
	// min and 8 h).
	WebIdleTimeout, WebSessionMax time.Duration
	// MaxConnsPerIP caps the connections one source address holds open
	// on each listener (0: DefaultMaxConnsPerIP); more are closed at once.
	MaxConnsPerIP int
	// MaxStreamsPerTerminal caps the Subscribe streams of one terminal
	// (0: api.DefaultMaxStreamsPerTerminal); a new one ends the oldest.
	MaxStreamsPerTerminal int
	// MetricsTokenFile, when set, holds the bearer token that reads
	// /metrics. Without it only a metrics client certificate from the
	// collector's CA does; anyone else is refused.
	MetricsTokenFile string
	Logger           *slog.Logger
	// Ready, when set, is called once both listeners accept connections.
	Ready func(grpcAddr, httpAddr net.Addr)
}

// Serve runs the collector until ctx is cancelled; cancellation is a clean
// exit.
func Serve(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	now := time.Now()
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	var metricsToken []byte
	if cfg.MetricsTokenFile != "" {
		var err error
		if metricsToken, err = LoadMetricsToken(cfg.MetricsTokenFile); err != nil {
			return err
		}
	}
	res, err := InitDB(ctx, cfg.DataDir, cfg.DB, now)
	if err != nil {
		return err
	}
	if res.AdminToken != "" {
		log.Info("initialised data directory", "dir", cfg.DataDir, "ca_pin", res.CAPin, "admin_token_file", res.AdminTokenFile)
	}
	authority, _, err := ca.LoadOrCreate(cfg.DataDir, now)
	if err != nil {
		return err
	}
	signing, _, err := ca.LoadOrCreateSigningKey(filepath.Join(cfg.DataDir, SigningKeyFile))
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg.DataDir, cfg.DB)
	if err != nil {
		return err
	}
	defer st.Close()

	key, err := logins.LoadKey(filepath.Join(cfg.DataDir, TOTPKeyFile))
	if err != nil {
		return err
	}
	policy := logins.DefaultPolicy()
	if cfg.Logins != nil {
		policy = *cfg.Logins
	}
	policy.Now, policy.Logger = nil, log
	authn, err := logins.New(st, key, policy)
	if err != nil {
		return err
	}
	if _, err := st.SetKeySealer(ctx, authn.KeySealer()); err != nil {
		return err
	}

	certs, err := newServerCerts(authority, serverNames(cfg))
	if err != nil {
		return err
	}
	webCert := certs.get
	if cfg.HTTPCertFile != "" || cfg.HTTPKeyFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.HTTPCertFile, cfg.HTTPKeyFile)
		if err != nil {
			return fmt.Errorf("console certificate: %w", err)
		}
		webCert = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	loc := cfg.Location
	if loc == nil {
		if loc, err = time.LoadLocation("Asia/Tokyo"); err != nil {
			return err
		}
	}
	ops, err := operators.New(st, key, operators.Policy{
		DelayAfter: operators.DefaultDelayAfter, Delay: operators.DefaultDelay, LockAfter: operators.DefaultLockAfter,
		Window: policy.Window, Issuer: policy.Issuer + " console", Logger: log,
	})
	if err != nil {
		return err
	}
	collectorAddrs, err := CollectorAddrs(cfg.GRPCListen, cfg.AdvertiseAddrs)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var svc *api.Services
	evaluator := compliance.New(compliance.Config{
		// A zero interval means a minute here as in the agents' policy.
		Store: st, Policy: compliance.Policy{ReportInterval: cfg.ReportInterval, Version: version.Version, MinAgentVersion: cfg.MinAgentVersion,
			NetworkPolicyVersion: func() string {
				if svc == nil {
					return ""
				}
				return svc.NetworkPolicyVersion()
			}},
		Location: loc, Registerer: reg, Logger: log,
	})
	reports := report.New(st, loc, version.Version)
	var console *web.Server
	svc = api.New(api.Config{
		Store: st, CA: authority, ExemptionKey: signing.Public().(ed25519.PublicKey), ExemptionSigner: signing,
		// Session tickets that a restarted collector, and every replica
		// given the same data directory keys, can open: a key derived
		// from the signing key under its own label (HMAC), never the
		// signing key itself.
		SessionTicketSecret:  signing.Seed(),
		ExemptionMaxDuration: cfg.ExemptionMaxDuration, ExemptionDefaultDuration: cfg.ExemptionDefaultDuration,
		CertValidity: cfg.CertValidity, ReportInterval: cfg.ReportInterval, MaxStreamsPerTerminal: cfg.MaxStreamsPerTerminal,
		Version: version.Version, Logins: authn, Operators: ops, Reports: reports, Logger: log, Metrics: api.NewMetrics(reg),
		CollectorAddrs: collectorAddrs,
		Changed: func(terminalID string) {
			evaluator.Poke(terminalID)
			console.Changed(terminalID)
		},
		PostureStored:        evaluator.Stored,
		NetworkPolicyChanged: evaluator.PokeAll,
	})
	if err := svc.LoadNetworkPolicy(ctx); err != nil {
		return err
	}
	console, err = web.New(web.Config{
		Store: st, Admin: svc.Admin, Operators: ops, Reports: reports, Compliance: evaluator.Policy(),
		ExemptionMaxDuration: cfg.ExemptionMaxDuration, Location: loc,
		IdleTimeout: cfg.WebIdleTimeout, AbsoluteTimeout: cfg.WebSessionMax, Version: version.Version,
		Health: st.Ping, Logger: log,
		Metrics: &metricsGuard{token: metricsToken, ca: authority.Pool(), now: time.Now, next: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})},
	})
	if err != nil {
		return err
	}
	grpcSrv := svc.NewGRPCServer(certs.get)

	gl, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		return fmt.Errorf("listen gRPC on %s: %w", cfg.GRPCListen, err)
	}
	hl, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen HTTPS on %s: %w", cfg.HTTPListen, err)
	}
	gl = newLimitListener(gl, cfg.MaxConnsPerIP, log)
	hl = newLimitListener(hl, cfg.MaxConnsPerIP, log)
	httpSrv := &http.Server{
		Handler:           console.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// A client certificate is asked for, never required: only
		// /metrics looks at it (metricsGuard). Naming the collector's CA
		// keeps browsers from offering, or asking about, any other.
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: webCert,
			ClientAuth: tls.RequestClientCert, ClientCAs: authority.Pool()},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	startBus(bg, st, svc, log)
	go func() { _ = evaluator.Run(bg) }()
	go console.Sweep(bg)
	log.Info("collector listening", "grpc", gl.Addr().String(), "https", hl.Addr().String(), "console", "https://"+hl.Addr().String()+"/",
		"ca_pin", res.CAPin, "version", version.Version)
	if cfg.Ready != nil {
		cfg.Ready(gl.Addr(), hl.Addr())
	}

	errc := make(chan error, 2)
	go func() { errc <- grpcSrv.Serve(gl) }()
	go func() { errc <- httpSrv.ServeTLS(hl, "", "") }()
	go certs.refresh(bg, log)

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("listener failed", "err", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		grpcSrv.Stop()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("collector stopped")
	return nil
}

// CollectorAddrs are the collector's own addresses as the network policy
// carries them: the gRPC listen address's IP when it names one (not a
// host name, 0.0.0.0 or ::), then advertised, without duplicates.
func CollectorAddrs(grpcListen string, advertised []netip.Addr) ([]netip.Addr, error) {
	var out []netip.Addr
	if host, _, err := net.SplitHostPort(grpcListen); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	for _, a := range advertised {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if err := api.CheckCollectorAddrs(out); err != nil {
		return nil, fmt.Errorf("advertised addresses: %w", err)
	}
	return out, nil
}

func serverNames(cfg Config) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	for _, addr := range []string{cfg.GRPCListen, cfg.HTTPListen} {
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
			names = append(names, host)
		}
	}
	return append(names, cfg.ServerNames...)
}

// serverCerts holds the collector's own TLS certificate, issued by its CA at
// start and reissued before it expires.
type serverCerts struct {
	ca       *ca.CA
	names    []string
	validity time.Duration
	mu       sync.RWMutex
	cert     *tls.Certificate
}

func newServerCerts(authority *ca.CA, names []string) (*serverCerts, error) {
	s := &serverCerts{ca: authority, names: names, validity: 30 * 24 * time.Hour}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *serverCerts) issue() error {
	c, err := s.ca.ServerCertificate(s.names, time.Now(), s.validity)
	if err != nil {
		return fmt.Errorf("issue server certificate: %w", err)
	}
	s.mu.Lock()
	s.cert = &c
	s.mu.Unlock()
	return nil
}

func (s *serverCerts) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cert, nil
}

func (s *serverCerts) refresh(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.issue(); err != nil {
				log.Error("renew server certificate", "err", err)
			}
		}
	}
}
