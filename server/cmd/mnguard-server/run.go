package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/totp"
	"github.com/mnguard/mnguard/internal/version"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/collector"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/web"
)

const usage = `usage: mnguard-server COMMAND [flags]

Commands:
  init     create the CA, keys (totp.key seals the TOTP secrets: back it up
           with the database), database and first admin API token in --data-dir
  serve    run the collector and the TOTP login authority (initialises an
           empty --data-dir first); --db postgres://… for replicas that
           share one PostgreSQL (each with a copy of the data directory's
           keys)
  migrate  copy an installation from SQLite to an empty PostgreSQL
           database, verified by row counts and the audit chain
  metrics-cert
           issue a client certificate (and key) from the CA in --data-dir
           that reads /metrics, for a Prometheus scraper
  version  print the version

Run 'mnguard-server COMMAND -h' for the flags of a command.
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mnguard-server %s: %s\n", args[0], oneLine(err))
		return 1
	}
	fs := flag.NewFlagSet("mnguard-server "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", env("MNGUARD_DATA_DIR", "/var/lib/mnguard-server"), "data directory: CA, keys, database (env MNGUARD_DATA_DIR)")
	dbFlag := func() *string {
		return fs.String("db", env("MNGUARD_DB", ""), "database: empty for SQLite in --data-dir, sqlite:PATH, or postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full for replicas that share one PostgreSQL, each with a copy of the data directory's keys (env MNGUARD_DB)")
	}
	switch args[0] {
	case "init":
		dbURL := dbFlag()
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		db, err := parseDB("--db", *dbURL, *dataDir)
		if err != nil {
			return fail(err)
		}
		log := slog.New(slog.NewTextHandler(stderr, nil))
		res, err := prepareDB(ctx, db, *dataDir, log, time.Now())
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, res.CAPin)
		if res.AdminToken != "" {
			fmt.Fprintf(stderr, "Initialised %s.\nFirst admin operator: admin. Its console password is in %s, its TOTP secret in %s,\nits API token in %s (readable by root only; shown nowhere else).\nAgents enroll with --ca-pin %s\n",
				*dataDir, res.AdminPasswordFile, res.AdminTOTPFile, res.AdminTokenFile, res.CAPin)
		} else {
			fmt.Fprintf(stderr, "%s was already initialised; nothing changed.\n", *dataDir)
		}
		return 0
	case "serve":
		dbURL := dbFlag()
		grpcListen := fs.String("grpc-listen", env("MNGUARD_GRPC_LISTEN", ":8443"), "gRPC listen address for agents and mnguardctl (env MNGUARD_GRPC_LISTEN)")
		httpListen := fs.String("http-listen", env("MNGUARD_HTTP_LISTEN", ":8444"), "HTTPS listen address of the web console, /healthz and /metrics (env MNGUARD_HTTP_LISTEN)")
		httpCert := fs.String("http-cert", env("MNGUARD_HTTP_CERT", ""), "PEM certificate (chain) for the console that browsers already trust, instead of one from the collector's CA (env MNGUARD_HTTP_CERT)")
		httpKey := fs.String("http-key", env("MNGUARD_HTTP_KEY", ""), "PEM private key of --http-cert (env MNGUARD_HTTP_KEY)")
		timeZone := fs.String("time-zone", env("MNGUARD_TIME_ZONE", "Asia/Tokyo"), "time zone of the console and the reports (env MNGUARD_TIME_ZONE)")
		minAgent := fs.String("min-agent-version", env("MNGUARD_MIN_AGENT_VERSION", ""), "oldest agent version (vMAJOR.MINOR.PATCH) the compliance check accepts; default: the collector's own version (env MNGUARD_MIN_AGENT_VERSION)")
		webIdle := fs.Duration("web-idle-timeout", web.DefaultIdleTimeout, "console sessions end after this long without a request (10s to 8h; env MNGUARD_WEB_IDLE_TIMEOUT)")
		webMax := fs.Duration("web-session-max", web.DefaultAbsoluteTimeout, "console sessions end this long after sign-in (1m to 24h; env MNGUARD_WEB_SESSION_MAX)")
		maxConns := fs.Int("max-conns-per-ip", collector.DefaultMaxConnsPerIP, "connections one source address may hold open on each listener; more are closed at once (raise it for terminals behind NAT; env MNGUARD_MAX_CONNS_PER_IP)")
		maxStreams := fs.Int("max-streams-per-terminal", api.DefaultMaxStreamsPerTerminal, "Subscribe streams one terminal may hold open; a new one ends its oldest (env MNGUARD_MAX_STREAMS_PER_TERMINAL)")
		metricsToken := fs.String("metrics-token-file", env("MNGUARD_METRICS_TOKEN_FILE", ""), "file (mode 0600) holding the bearer token that reads /metrics; without it only a 'metrics-cert' client certificate does (env MNGUARD_METRICS_TOKEN_FILE)")
		var names, advertise stringList
		fs.Var(&names, "server-name", "extra DNS name or IP address in the server certificate (repeatable)")
		fs.Var(&advertise, "advertise-addr", "IP address agents reach the collector at, always allowed by the network policy besides the --grpc-listen address when it names one (repeatable; env MNGUARD_ADVERTISE_ADDR, comma-separated, which the flags replace)")
		certValidity := fs.Duration("cert-validity", 90*24*time.Hour, "lifetime of agent certificates; agents renew when a third is left")
		reportInterval := fs.Duration("report-interval", 60*time.Second, "how often agents report posture at least")
		logLevel := fs.String("log-level", env("MNGUARD_LOG_LEVEL", "info"), "debug, info, warn or error (env MNGUARD_LOG_LEVEL)")
		def := logins.DefaultPolicy()
		loginWindow := fs.Int("login-window", def.Window, fmt.Sprintf("TOTP time steps accepted either side of a user's expected step, 0 to %d (env MNGUARD_LOGIN_WINDOW)", totp.MaxWindow))
		loginDelayAfter := fs.Int("login-delay-after", def.DelayAfter, "consecutive failed TOTP attempts after which every attempt is delayed; 0 delays all (env MNGUARD_LOGIN_DELAY_AFTER)")
		loginDelay := fs.Duration("login-delay", def.Delay, fmt.Sprintf("that delay, 0 (none) to %s (env MNGUARD_LOGIN_DELAY)", logins.MaxDelay))
		loginLockAfter := fs.Int("login-lock-after", def.LockAfter, fmt.Sprintf("consecutive failed TOTP attempts that lock a user until the helpdesk unlocks, 1 to %d; there is no 'never' (env MNGUARD_LOGIN_LOCK_AFTER)", logins.MaxLockAfter))
		issuer := fs.String("totp-issuer", def.Issuer, "issuer name authenticator apps show for enrolled users (env MNGUARD_TOTP_ISSUER)")
		exMax := fs.Duration("exemption-max-duration", api.DefaultExemptionMaxDuration, fmt.Sprintf("longest exemption the helpdesk may issue, %s to %s (env MNGUARD_EXEMPTION_MAX_DURATION)", api.MinExemptionDuration, exemption.MaxDuration))
		exDefault := fs.Duration("exemption-default-duration", api.DefaultExemptionDuration, "exemption duration when the helpdesk names none, at most --exemption-max-duration (env MNGUARD_EXEMPTION_DEFAULT_DURATION)")
		for name, envName := range map[string]string{
			"login-window": "MNGUARD_LOGIN_WINDOW", "login-delay-after": "MNGUARD_LOGIN_DELAY_AFTER",
			"login-delay": "MNGUARD_LOGIN_DELAY", "login-lock-after": "MNGUARD_LOGIN_LOCK_AFTER",
			"totp-issuer":            "MNGUARD_TOTP_ISSUER",
			"exemption-max-duration": "MNGUARD_EXEMPTION_MAX_DURATION", "exemption-default-duration": "MNGUARD_EXEMPTION_DEFAULT_DURATION",
			"web-idle-timeout": "MNGUARD_WEB_IDLE_TIMEOUT", "web-session-max": "MNGUARD_WEB_SESSION_MAX",
			"max-conns-per-ip": "MNGUARD_MAX_CONNS_PER_IP", "max-streams-per-terminal": "MNGUARD_MAX_STREAMS_PER_TERMINAL",
		} {
			if v := getenv(envName); v != "" {
				if err := fs.Set(name, v); err != nil {
					return fail(fmt.Errorf("%s: %w", envName, err))
				}
			}
		}
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		// The flags, if given, replace the environment's list.
		if v := getenv("MNGUARD_ADVERTISE_ADDR"); v != "" && len(advertise) == 0 {
			advertise = strings.Split(v, ",")
		}
		advertised, err := parseAdvertiseAddrs(advertise)
		if err != nil {
			return fail(err)
		}
		var level slog.Level
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			return fail(fmt.Errorf("--log-level: %w", err))
		}
		if *certValidity < 10*time.Second {
			return fail(errors.New("--cert-validity: at least 10s"))
		}
		if *reportInterval < time.Second {
			return fail(errors.New("--report-interval: at least 1s"))
		}
		policy := logins.Policy{
			Window: *loginWindow, DelayAfter: *loginDelayAfter, Delay: *loginDelay,
			LockAfter: *loginLockAfter, Issuer: *issuer,
		}
		if err := checkLoginFlags(policy); err != nil {
			return fail(err)
		}
		if err := checkExemptionFlags(*exMax, *exDefault); err != nil {
			return fail(err)
		}
		loc, err := time.LoadLocation(*timeZone)
		if err != nil || *timeZone == "" {
			return fail(fmt.Errorf("--time-zone %q: not a time zone name such as Asia/Tokyo", *timeZone))
		}
		switch {
		case (*httpCert == "") != (*httpKey == ""):
			return fail(errors.New("--http-cert and --http-key: give both or neither"))
		case *webIdle < 10*time.Second || *webIdle > 8*time.Hour:
			return fail(fmt.Errorf("--web-idle-timeout %s: must be 10s to 8h", *webIdle))
		case *webMax < time.Minute || *webMax > 24*time.Hour || *webMax < *webIdle:
			return fail(fmt.Errorf("--web-session-max %s: must be 1m to 24h and not below --web-idle-timeout", *webMax))
		case *minAgent != "" && !versionRE.MatchString(*minAgent):
			return fail(fmt.Errorf("--min-agent-version %q: want vMAJOR.MINOR.PATCH", *minAgent))
		case *maxConns < 1 || *maxConns > 100000:
			return fail(fmt.Errorf("--max-conns-per-ip %d: must be 1 to 100000", *maxConns))
		case *maxStreams < 1 || *maxStreams > 16:
			return fail(fmt.Errorf("--max-streams-per-terminal %d: must be 1 to 16", *maxStreams))
		}
		db, err := parseDB("--db", *dbURL, *dataDir)
		if err != nil {
			return fail(err)
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
		if db.postgres {
			// Waits for PostgreSQL, and checks this replica's keys against
			// the database before Serve could create any.
			if _, err := prepareDB(ctx, db, *dataDir, log, time.Now()); err != nil {
				if ctx.Err() != nil {
					log.Info("stopped before the database answered", "err", oneLine(err))
					return 0 // stopping is a clean exit
				}
				return fail(err)
			}
		}
		err = collector.Serve(ctx, collector.Config{
			DataDir: *dataDir, DB: db.url, GRPCListen: *grpcListen, HTTPListen: *httpListen,
			ServerNames: names, AdvertiseAddrs: advertised, CertValidity: *certValidity, ReportInterval: *reportInterval,
			ExemptionMaxDuration: *exMax, ExemptionDefaultDuration: *exDefault,
			Logins: &policy, Logger: log,
			HTTPCertFile: *httpCert, HTTPKeyFile: *httpKey, Location: loc, MinAgentVersion: *minAgent,
			WebIdleTimeout: *webIdle, WebSessionMax: *webMax,
			MaxConnsPerIP: *maxConns, MaxStreamsPerTerminal: *maxStreams, MetricsTokenFile: *metricsToken,
		})
		if err != nil {
			return fail(err)
		}
		return 0
	case "metrics-cert":
		out := fs.String("out", "", "directory to write metrics.crt, metrics.key (0600) and ca.crt into")
		validity := fs.Duration("validity", 365*24*time.Hour, "lifetime of the certificate (1h to 10 years)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *out == "" {
			return fail(errors.New("--out: the directory to write the certificate into"))
		}
		if *validity < time.Hour || *validity > 10*365*24*time.Hour {
			return fail(fmt.Errorf("--validity %s: must be 1h to 10 years", *validity))
		}
		files, err := collector.WriteMetricsCert(*dataDir, *out, time.Now(), *validity)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, strings.Join(files, "\n"))
		return 0
	case "migrate":
		return migrateCmd(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version":
		fmt.Fprintln(stdout, version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mnguard-server: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// parseAdvertiseAddrs reads the --advertise-addr values: unicast IP
// addresses without a zone, each once.
func parseAdvertiseAddrs(vs []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, v := range vs {
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		switch {
		case err != nil:
			return nil, fmt.Errorf("--advertise-addr %q: not an IP address (a host name cannot be allowed by address)", v)
		case a.Zone() != "" || a.Is4In6():
			return nil, fmt.Errorf("--advertise-addr %q: write the address without a zone or IPv4-mapped form", v)
		case a.IsUnspecified() || a.IsMulticast():
			return nil, fmt.Errorf("--advertise-addr %q: not a unicast address", v)
		case slices.Contains(out, a):
			return nil, fmt.Errorf("--advertise-addr %q: given twice", v)
		}
		out = append(out, a)
	}
	return out, nil
}

// checkLoginFlags checks the TOTP login flags, naming the flag at fault.
func checkLoginFlags(p logins.Policy) error {
	switch {
	case p.Window < 0 || p.Window > totp.MaxWindow:
		return fmt.Errorf("--login-window %d: must be 0 to %d time steps", p.Window, totp.MaxWindow)
	case p.DelayAfter < 0:
		return fmt.Errorf("--login-delay-after %d: must not be negative", p.DelayAfter)
	case p.Delay < 0 || p.Delay > logins.MaxDelay:
		return fmt.Errorf("--login-delay %s: must be 0 to %s (agents wait 10s for an answer)", p.Delay, logins.MaxDelay)
	case p.LockAfter < 1 || p.LockAfter > logins.MaxLockAfter:
		return fmt.Errorf("--login-lock-after %d: must be 1 to %d (without a lockout a 6-digit code falls to guessing)", p.LockAfter, logins.MaxLockAfter)
	case p.Issuer == "":
		return errors.New("--totp-issuer: empty")
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("--totp-issuer: %w", err)
	}
	return nil
}

// checkExemptionFlags checks the exemption durations, naming the flag at
// fault.
func checkExemptionFlags(longest, def time.Duration) error {
	switch {
	case longest < api.MinExemptionDuration || longest > exemption.MaxDuration:
		return fmt.Errorf("--exemption-max-duration %s: must be %s to %s", longest, api.MinExemptionDuration, exemption.MaxDuration)
	case def < api.MinExemptionDuration || def > longest:
		return fmt.Errorf("--exemption-default-duration %s: must be %s to --exemption-max-duration (%s)", def, api.MinExemptionDuration, longest)
	case def%time.Second != 0 || longest%time.Second != 0:
		return errors.New("--exemption-max-duration and --exemption-default-duration: whole seconds")
	}
	return nil
}

var versionRE = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.+-]*)?$`)

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
