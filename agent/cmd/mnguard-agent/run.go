package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/daemon"
	"github.com/mnguard/mnguard/agent/enroll"
	"github.com/mnguard/mnguard/agent/media"
	"github.com/mnguard/mnguard/agent/posture"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/version"
)

const usage = `usage: mnguard-agent COMMAND [flags]

Commands:
  enroll     enroll this terminal: --server HOST:PORT --token T --ca-pin sha256:HEX
  run        run the agent in the foreground (the service runs this)
  status     say whether the agent is enrolled, running and reporting
  install    install the agent as a system service (systemd, Windows SCM) and,
             on Linux, the udev rules that keep removable disks read-only
             without the agent (--no-rules to skip them)
  uninstall  remove the service
  start      start the service
  stop       stop the service
  version    print the version
  udev-hook  NAME: what the udev rule runs for a new block device
  exemption  challenge --device VID:PID:SERIAL --duration 1h | enter CODE | list:
             offline device exemptions from the helpdesk, and the exemptions
             in force ('mnguard-agent exemption help' for more)

Every command takes --config FILE (default ` + "%s" + `, env MNGUARD_CONFIG)
and --state-dir DIR (overrides the file's state_dir, env MNGUARD_STATE_DIR).
`

// common holds the flags every command takes.
type common struct {
	configPath string
	stateDir   string
}

func (c *common) register(fs *flag.FlagSet, getenv func(string) string) {
	def := config.DefaultPath()
	if v := getenv("MNGUARD_CONFIG"); v != "" {
		def = v
	}
	fs.StringVar(&c.configPath, "config", def, "agent configuration file (env MNGUARD_CONFIG)")
	fs.StringVar(&c.stateDir, "state-dir", getenv("MNGUARD_STATE_DIR"), "state directory; overrides the file's state_dir (env MNGUARD_STATE_DIR)")
}

// load reads the configuration; a file named by flag or env must exist.
func (c *common) load(fs *flag.FlagSet, getenv func(string) string) (config.Config, error) {
	required := getenv("MNGUARD_CONFIG") != ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			required = true
		}
	})
	cfg, err := config.Load(c.configPath, required)
	if err != nil {
		return cfg, err
	}
	if c.stateDir != "" {
		cfg.StateDir = c.stateDir
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return cfg, fmt.Errorf("state directory: %w", err)
	}
	cfg.StateDir = abs
	return cfg, cfg.Validate()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, config.DefaultPath())
		return 2
	}
	cmd := args[0]
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mnguard-agent %s: %s\n", cmd, strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	fs := flag.NewFlagSet("mnguard-agent "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, getenv)
	switch cmd {
	case "enroll":
		server := fs.String("server", getenv("MNGUARD_SERVER"), "collector HOST:PORT (env MNGUARD_SERVER)")
		token := fs.String("token", getenv("MNGUARD_ENROLL_TOKEN"), "enrollment token from 'mnguardctl tokens create' (env MNGUARD_ENROLL_TOKEN)")
		pin := fs.String("ca-pin", getenv("MNGUARD_CA_PIN"), "the collector CA's fingerprint, sha256:HEX (env MNGUARD_CA_PIN)")
		force := fs.Bool("force", false, "replace an existing enrollment (after the terminal was revoked)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			return fail(err)
		}
		if *server == "" {
			*server = cfg.Server.First()
		}
		if *server == "" {
			return fail(errors.New("--server missing (or server: in the configuration file)"))
		}
		host, err := posture.HostFacts(ctx, version.Version)
		if err != nil {
			return fail(err)
		}
		id, err := enroll.Enroll(ctx, enroll.Options{
			Server: *server, Token: *token, CAPin: *pin, StateDir: state.Dir(cfg.StateDir), Host: host, Force: *force,
		})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "Enrolled as terminal %s with %s; certificate valid until %s.\nStart the agent: mnguard-agent install && mnguard-agent start (or mnguard-agent run).\n",
			id.TerminalID, *server, id.Cert.NotAfter.Local().Format("2006-01-02 15:04 MST"))
		return 0
	case "run":
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			return fail(err)
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Level()}))
		tuneGC(getenv)
		err = runService(ctx, cfg, c.configPath, func(ctx context.Context) error {
			return daemon.Run(ctx, daemon.Options{Config: cfg, Version: version.Version, Logger: log, Now: testClock(log, getenv)})
		})
		if err != nil {
			return fail(err)
		}
		return 0
	case "status":
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			return fail(err)
		}
		ok := printStatus(stdout, cfg, c.configPath)
		if !ok {
			return 1
		}
		return 0
	case "install", "uninstall", "start", "stop":
		noRules := false
		if cmd == "install" || cmd == "uninstall" {
			fs.BoolVar(&noRules, "no-rules", false, "leave the udev rules alone (Linux)")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			return fail(err)
		}
		if err := controlService(cmd, cfg, c.configPath); err != nil {
			return fail(err)
		}
		if !noRules && runtime.GOOS == "linux" {
			if err := rules(cmd); err != nil {
				return fail(err)
			}
		}
		fmt.Fprintf(stdout, "mnguard-agent: %s done\n", cmd)
		return 0
	case "udev-hook":
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "mnguard-agent udev-hook: want one kernel device name, e.g. sdb")
			return 2
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			// Fail closed: without the configuration, still protect real
			// removable devices.
			fmt.Fprintf(stderr, "mnguard-agent udev-hook: %v (using defaults)\n", err)
			cfg = config.Default()
		}
		msg, err := media.Hook(media.Options{TreatAsRemovable: cfg.Media.TreatAsRemovable}, fs.Arg(0))
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stderr, "mnguard-agent udev-hook: "+msg)
		return 0
	case "exemption":
		return runExemption(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version":
		fmt.Fprintln(stdout, version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprintf(stdout, usage, config.DefaultPath())
		return 0
	default:
		fmt.Fprintf(stderr, "mnguard-agent: unknown command %q\n", cmd)
		fmt.Fprintf(stderr, usage, config.DefaultPath())
		return 2
	}
}

// agentGOGC is the running agent's GC target unless GOGC is set. Its live
// heap is under 1 MiB while idle, so Go's default (100, with its 4 MiB
// minimum heap goal) lets the heap grow to four times what it holds before
// collecting; 50 halves that floor (2 MiB) for about 1 MiB less resident
// memory. The price is more collections while the agent allocates, which
// it barely does when idle (one posture collection a report interval).
// There is no memory limit (GOMEMLIMIT still sets one): a soft limit does
// not shrink an idle heap below the GOGC goal, and under a burst (500
// spooled events at once) it would trade the user's CPU for memory.
const agentGOGC = 50

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(agentGOGC)
	}
}

// rules installs or removes the udev rules next to the service.
func rules(cmd string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if cmd == "install" {
		return media.InstallRules(media.RuleDirs[0], exe)
	}
	return media.RemoveRules(media.RuleDirs[0])
}

// absConfig returns the configuration path the service should be given,
// or "" when the file does not exist (defaults then apply).
func absConfig(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	if _, err := os.Stat(abs); err != nil {
		return ""
	}
	return abs
}
