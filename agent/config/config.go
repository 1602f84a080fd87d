// Package config reads the agent's YAML configuration file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the agent's configuration. Every key is optional; see
// installer/linux/agent.yaml for an annotated example.
type Config struct {
	// Server is the collector's HOST:PORT. Enrollment records it too; this
	// key, when set, wins over the recorded one.
	Server string `yaml:"server"`
	// StateDir holds the agent's key, certificates, spool and status.
	StateDir string `yaml:"state_dir"`
	// ReportInterval is the longest time between two posture reports
	// until the collector's policy says otherwise.
	ReportInterval Duration `yaml:"report_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// ServiceName is the system service's name; change it only to run
	// several agents on one machine.
	ServiceName string `yaml:"service_name"`
	// Media configures removable-media enforcement.
	Media Media `yaml:"media"`
	// MFA configures the local login gate.
	MFA MFA `yaml:"mfa"`
	// Network configures the segment-isolation check.
	Network Network `yaml:"network"`
}

// Network configures the segment-isolation check. The policy itself
// (allowed networks, DNS servers, enforcement) comes from the collector;
// these keys only move where the agent reads the system's state from.
type Network struct {
	// SysfsRoot replaces /sys where network adapters are classified (USB
	// tethering, Wi-Fi, Bluetooth) and USB adapters are cut off the bus.
	// FOR TESTS ONLY: it lets tests present sysfs trees of real phones and
	// adapters. Logged as a warning at every start. Empty: /sys.
	SysfsRoot string `yaml:"sysfs_root"`
	// ResolvConf replaces /etc/resolv.conf where the DNS servers in use
	// are read. FOR TESTS ONLY; logged as a warning at every start.
	// Empty: /etc/resolv.conf.
	ResolvConf string `yaml:"resolv_conf"`
}

// TestOverrides lists the network keys set that only tests should set, as
// "key=value", for the warning at start.
func (n Network) TestOverrides() []string {
	var o []string
	if n.SysfsRoot != "" {
		o = append(o, "network.sysfs_root="+n.SysfsRoot)
	}
	if n.ResolvConf != "" {
		o = append(o, "network.resolv_conf="+n.ResolvConf)
	}
	return o
}

// MFA configures the login gate that pam_mnguard.so asks.
type MFA struct {
	// Socket is the unix socket the PAM module connects to; it must match
	// the module's socket= argument.
	Socket string `yaml:"socket"`
	// Services are the PAM services whose logins must require
	// pam_mnguard; the posture reports, for each one present, whether its
	// auth stack does ("MFA enforced").
	Services []string `yaml:"services"`
	// PamDir is the directory of the PAM service files.
	PamDir string `yaml:"pam_dir"`
}

// DefaultMFAServices are the login services checked when none are
// configured: console, GNOME and LightDM desktops, SSH and sudo.
var DefaultMFAServices = []string{"login", "gdm-password", "lightdm", "sshd", "sudo"}

// DefaultPamDir is where PAM service files live.
const DefaultPamDir = "/etc/pam.d"

// maxMFAServices bounds mfa.services.
const maxMFAServices = 64

// Media configures removable-media enforcement.
type Media struct {
	// Mode is "enforce" (removable media read-only) or "monitor" (report
	// only; the terminal is then reported non-compliant).
	Mode string `yaml:"mode"`
	// OnBusy says what to do when a mounted filesystem cannot be remounted
	// read-only because files on it are open for writing: "kill" ends the
	// writers, "detach" detaches the mount (and ends the writers).
	OnBusy string `yaml:"on_busy"`
	// ReconcileInterval is how often the agent rescans devices as a
	// backstop: on Linux new devices and drift are announced (uevents,
	// inotify on the device nodes, the mount table) and handled at once.
	ReconcileInterval Duration `yaml:"reconcile_interval"`
	// ExemptionGrace is how long files may stay open for writing on a
	// device whose exemption ended (the users are warned, the remount
	// retried) before OnBusy applies.
	ExemptionGrace Duration `yaml:"exemption_grace"`
	// TreatAsRemovable lists kernel name patterns (e.g. "loop*") to treat
	// as removable disks. FOR TESTS ONLY: it lets tests run the real
	// enforcement on loop devices. Logged as a warning at every start.
	TreatAsRemovable []string `yaml:"treat_as_removable"`
}

var (
	serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// pamServiceRE is what pam_mnguard and the agent's socket accept as a
	// PAM service name.
	pamServiceRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// Duration is a time.Duration written as "60s", "5m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		// A bare number means seconds.
		secs, err2 := strconv.ParseUint(s, 10, 32)
		if err2 != nil {
			return fmt.Errorf("%q is not a duration such as 60s or 5m", s)
		}
		v = time.Duration(secs) * time.Second
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultPath is where the agent looks for its configuration.
func DefaultPath() string {
	if runtime.GOOS == "windows" {
		return `C:\ProgramData\mnguard\agent.yaml`
	}
	return "/etc/mnguard/agent.yaml"
}

// DefaultReconcileInterval is media.reconcile_interval when none is
// configured: 60 s on Linux, where the agent hears of drift as it happens;
// 10 s on Windows, where the removable-storage policy in the registry is
// checked only by the rescan.
func DefaultReconcileInterval() time.Duration {
	if runtime.GOOS == "windows" {
		return 10 * time.Second
	}
	return 60 * time.Second
}

// DefaultStateDir is the state directory when none is configured.
func DefaultStateDir() string {
	if runtime.GOOS == "windows" {
		return `C:\ProgramData\mnguard\agent`
	}
	return "/var/lib/mnguard-agent"
}

// DefaultMFASocket is where pam_mnguard.so looks for the agent.
func DefaultMFASocket() string {
	if runtime.GOOS == "windows" {
		return "" // the Windows credential provider uses a named pipe (later)
	}
	return "/run/mnguard/pam.sock"
}

// Default returns the configuration used when no file sets a key.
func Default() Config {
	return Config{
		StateDir:       DefaultStateDir(),
		ReportInterval: Duration(60 * time.Second),
		LogLevel:       "info",
		ServiceName:    "mnguard-agent",
		MFA:            MFA{Socket: DefaultMFASocket(), Services: slices.Clone(DefaultMFAServices), PamDir: DefaultPamDir},
		Media: Media{
			Mode:              "enforce",
			OnBusy:            "kill",
			ReconcileInterval: Duration(DefaultReconcileInterval()),
			ExemptionGrace:    Duration(60 * time.Second),
		},
	}
}

// maxFileBytes bounds the configuration file; a real one is a few hundred
// bytes.
const maxFileBytes = 1 << 20

// Load reads the file at path over the defaults. A missing file is an error
// only when required is true (the operator named it with --config).
func Load(path string, required bool) (Config, error) {
	cfg := Default()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return cfg, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return cfg, fmt.Errorf("config: %s is larger than %d bytes", path, maxFileBytes)
	}
	if err := Parse(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config: %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over cfg and validates the result. Unknown keys are
// errors, so a typo does not silently leave a default in force.
func Parse(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return cfg.Validate()
}

// Validate checks every key and names the one that is wrong.
func (c *Config) Validate() error {
	if c.Server != "" {
		host, port, err := net.SplitHostPort(c.Server)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("server: %q is not HOST:PORT", c.Server)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return fmt.Errorf("server: port %q is not a number from 1 to 65535", port)
		}
	}
	if c.StateDir == "" {
		return errors.New("state_dir: empty")
	}
	if d := time.Duration(c.ReportInterval); d < time.Second || d > 24*time.Hour {
		return fmt.Errorf("report_interval: %s is outside 1s to 24h", d)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if !serviceNameRE.MatchString(c.ServiceName) {
		return fmt.Errorf("service_name: %q is not 1 to 64 letters, digits, '-' or '_'", c.ServiceName)
	}
	if err := c.MFA.validate(); err != nil {
		return err
	}
	if err := c.Network.validate(); err != nil {
		return err
	}
	return c.Media.validate()
}

// maxPathBytes bounds the network section's paths.
const maxPathBytes = 4096

func (n *Network) validate() error {
	for _, k := range []struct{ key, path string }{{"network.sysfs_root", n.SysfsRoot}, {"network.resolv_conf", n.ResolvConf}} {
		if k.path == "" {
			continue
		}
		// Linux paths: slash-separated and absolute on every OS (Windows
		// reads neither).
		if !path.IsAbs(k.path) || len(k.path) > maxPathBytes || strings.ContainsRune(k.path, 0) {
			return fmt.Errorf("%s: %q is not an absolute path of at most %d bytes", k.key, k.path, maxPathBytes)
		}
		if path.Clean(k.path) != k.path {
			return fmt.Errorf("%s: %q is not a clean path (write %q)", k.key, k.path, path.Clean(k.path))
		}
	}
	if n.SysfsRoot == "/" {
		return errors.New(`network.sysfs_root: "/" is not a sysfs tree; leave the key out for /sys`)
	}
	return nil
}

func (m *MFA) validate() error {
	if m.Socket != "" && (!filepath.IsAbs(m.Socket) || len(m.Socket) > 100) {
		return fmt.Errorf("mfa.socket: %q is not an absolute path of at most 100 bytes", m.Socket)
	}
	switch {
	case len(m.Services) == 0:
		return errors.New("mfa.services: empty; list the PAM services whose logins need the second factor, e.g. [login, sshd]")
	case len(m.Services) > maxMFAServices:
		return fmt.Errorf("mfa.services: %d services, at most %d", len(m.Services), maxMFAServices)
	}
	seen := make(map[string]bool, len(m.Services))
	for _, s := range m.Services {
		if !pamServiceRE.MatchString(s) || s == "." || s == ".." {
			return fmt.Errorf("mfa.services: %q is not a PAM service name (1 to 64 letters, digits, '.', '_' or '-')", s)
		}
		if seen[s] {
			return fmt.Errorf("mfa.services: %q is listed twice", s)
		}
		seen[s] = true
	}
	// PAM is Linux's: its directory is a slash-separated absolute path on
	// every OS (Windows ignores it until its credential provider exists).
	if m.PamDir == "" || !path.IsAbs(m.PamDir) {
		return fmt.Errorf("mfa.pam_dir: %q is not an absolute path", m.PamDir)
	}
	return nil
}

func (m *Media) validate() error {
	switch m.Mode {
	case "enforce", "monitor":
	default:
		return fmt.Errorf("media.mode: %q is not enforce or monitor", m.Mode)
	}
	switch m.OnBusy {
	case "kill", "detach":
	default:
		return fmt.Errorf("media.on_busy: %q is not kill or detach", m.OnBusy)
	}
	if d := time.Duration(m.ReconcileInterval); d < time.Second || d > time.Hour {
		return fmt.Errorf("media.reconcile_interval: %s is outside 1s to 1h", d)
	}
	if d := time.Duration(m.ExemptionGrace); d < time.Second || d > 10*time.Minute {
		return fmt.Errorf("media.exemption_grace: %s is outside 1s to 10m", d)
	}
	for _, p := range m.TreatAsRemovable {
		if _, err := path.Match(p, ""); err != nil || p == "" || strings.ContainsAny(p, "/ ") {
			return fmt.Errorf("media.treat_as_removable: %q is not a kernel name pattern such as loop*", p)
		}
	}
	return nil
}

// Level returns the configured log level.
func (c *Config) Level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel))
	return l
}
