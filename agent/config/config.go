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
	// Server is the collector's HOST:PORT, or a list of them (several
	// collector replicas: `server: [a:8443, b:8443]`). A host name that
	// resolves to several addresses counts as several. Enrollment records
	// one address; this key, when set, wins over the recorded one.
	Server Servers `yaml:"server"`
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

// MaxServers bounds the server list.
const MaxServers = 32

// Servers is the collector addresses, each HOST:PORT, in the order the
// agent tries them. In YAML it is one string or a list of strings.
type Servers []string

// UnmarshalYAML implements yaml.Unmarshaler: a scalar or a sequence of
// scalars.
func (s *Servers) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var one string
		if err := n.Decode(&one); err != nil {
			return err
		}
		if one == "" {
			*s = nil
			return nil
		}
		*s = Servers{one}
		return nil
	case yaml.SequenceNode:
		if len(n.Content) > MaxServers {
			return fmt.Errorf("server: %d addresses, at most %d", len(n.Content), MaxServers)
		}
		out := make(Servers, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("server: line %d: each entry is one HOST:PORT", c.Line)
			}
			var a string
			if err := c.Decode(&a); err != nil {
				return err
			}
			out = append(out, a)
		}
		*s = out
		return nil
	}
	return fmt.Errorf("server: line %d: HOST:PORT or a list [HOST:PORT, ...]", n.Line)
}

// First is the first address, or "".
func (s Servers) First() string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// String is the addresses, comma-separated.
func (s Servers) String() string { return strings.Join(s, ",") }

// ParseServers splits a comma-separated list of HOST:PORT (a flag's or an
// environment variable's value) and validates it.
func ParseServers(list string) (Servers, error) {
	var s Servers
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			s = append(s, a)
		}
	}
	return s, s.validate()
}

// validate checks each address and refuses duplicates.
func (s Servers) validate() error {
	if len(s) > MaxServers {
		return fmt.Errorf("server: %d addresses, at most %d", len(s), MaxServers)
	}
	seen := make(map[string]bool, len(s))
	for _, a := range s {
		if err := validateHostPort(a); err != nil {
			return err
		}
		key := strings.ToLower(a)
		if seen[key] {
			return fmt.Errorf("server: %q is listed twice", a)
		}
		seen[key] = true
	}
	return nil
}

// maxHostBytes is the longest DNS name.
const maxHostBytes = 253

func validateHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("server: %q is not HOST:PORT", a)
	}
	if len(host) > maxHostBytes || strings.ContainsFunc(host, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == '/' || r == ',' || r == '[' || r == ']'
	}) {
		return fmt.Errorf("server: %q: the host is not a name or an address", a)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("server: port %q is not a number from 1 to 65535", port)
	}
	return nil
}

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
	if err := c.Server.validate(); err != nil {
		return err
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
