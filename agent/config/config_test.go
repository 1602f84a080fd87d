package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleFileParses(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "installer", "linux", "agent.yaml"), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Server) == 0 || time.Duration(cfg.ReportInterval) != 60*time.Second {
		t.Errorf("example config = %+v, want server set and report_interval 60s", cfg)
	}
	if d := Default(); !slices.Equal(cfg.MFA.Services, d.MFA.Services) || cfg.MFA.PamDir != d.MFA.PamDir {
		t.Errorf("example mfa section %+v, want the defaults %+v", cfg.MFA, d.MFA)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml"), false); err != nil {
		t.Errorf("missing optional file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), true); err == nil {
		t.Error("missing required file accepted")
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", maxFileBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, true); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: err = %v", err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, yaml string
		wantErr    string
		check      func(Config) bool
	}{
		{name: "empty", yaml: "", check: func(c Config) bool { return c.StateDir == DefaultStateDir() }},
		{name: "all keys", yaml: "server: c.example:8443\nstate_dir: /tmp/s\nreport_interval: 5m\nlog_level: debug\n",
			check: func(c Config) bool {
				return slices.Equal(c.Server, Servers{"c.example:8443"}) && c.StateDir == "/tmp/s" && time.Duration(c.ReportInterval) == 5*time.Minute && c.LogLevel == "debug"
			}},
		{name: "seconds as number", yaml: "report_interval: 30\n", check: func(c Config) bool { return time.Duration(c.ReportInterval) == 30*time.Second }},
		{name: "unknown key", yaml: "sever: x:1\n", wantErr: "field sever not found"},
		{name: "bad server", yaml: "server: nohostport\n", wantErr: "server:"},
		{name: "server list", yaml: "server: [a.example:8443, 192.0.2.7:8443, '[2001:db8::1]:8443']\n",
			check: func(c Config) bool {
				return slices.Equal(c.Server, Servers{"a.example:8443", "192.0.2.7:8443", "[2001:db8::1]:8443"})
			}},
		{name: "server block list", yaml: "server:\n  - a.example:8443\n  - b.example:8443\n",
			check: func(c Config) bool { return slices.Equal(c.Server, Servers{"a.example:8443", "b.example:8443"}) }},
		{name: "server list bad entry", yaml: "server: [a.example:8443, b.example]\n", wantErr: `server: "b.example" is not HOST:PORT`},
		{name: "server listed twice", yaml: "server: [a.example:8443, A.example:8443]\n", wantErr: "listed twice"},
		{name: "server nested", yaml: "server: [[a.example:8443]]\n", wantErr: "each entry is one HOST:PORT"},
		{name: "server map", yaml: "server: {a: b}\n", wantErr: "HOST:PORT or a list"},
		{name: "server space", yaml: "server: 'a b:8443'\n", wantErr: "not a name or an address"},
		{name: "server comma", yaml: "server: 'a,b:8443'\n", wantErr: "not a name or an address"},
		{name: "server too many", yaml: "server: [" + strings.Repeat("a.example:1, ", MaxServers) + "a.example:2]\n", wantErr: "at most"},
		{name: "bad port", yaml: "server: h:99999\n", wantErr: "server: port"},
		{name: "bad duration", yaml: "report_interval: soon\n", wantErr: "not a duration"},
		{name: "too short interval", yaml: "report_interval: 10ms\n", wantErr: "report_interval"},
		{name: "bad level", yaml: "log_level: loud\n", wantErr: "log_level"},
		{name: "service name", yaml: "service_name: mnguard-agent-2\n", check: func(c Config) bool { return c.ServiceName == "mnguard-agent-2" }},
		{name: "bad service name", yaml: "service_name: ../etc/passwd\n", wantErr: "service_name"},
		{name: "media", yaml: "media:\n  mode: monitor\n  on_busy: detach\n  reconcile_interval: 5s\n  treat_as_removable: [\"loop*\"]\n",
			check: func(c Config) bool {
				return c.Media.Mode == "monitor" && c.Media.OnBusy == "detach" && time.Duration(c.Media.ReconcileInterval) == 5*time.Second && len(c.Media.TreatAsRemovable) == 1
			}},
		{name: "media defaults", yaml: "", check: func(c Config) bool {
			return c.Media.Mode == "enforce" && c.Media.OnBusy == "kill" && time.Duration(c.Media.ExemptionGrace) == time.Minute
		}},
		{name: "exemption grace", yaml: "media:\n  exemption_grace: 5s\n", check: func(c Config) bool { return time.Duration(c.Media.ExemptionGrace) == 5*time.Second }},
		{name: "exemption grace too long", yaml: "media:\n  exemption_grace: 1h\n", wantErr: "media.exemption_grace"},
		{name: "exemption grace zero", yaml: "media:\n  exemption_grace: 0s\n", wantErr: "media.exemption_grace"},
		{name: "bad media mode", yaml: "media:\n  mode: off\n", wantErr: "media.mode"},
		{name: "bad on_busy", yaml: "media:\n  on_busy: ignore\n", wantErr: "media.on_busy"},
		{name: "bad pattern", yaml: "media:\n  treat_as_removable: [\"[\"]\n", wantErr: "treat_as_removable"},
		{name: "mfa socket", yaml: "mfa:\n  socket: /tmp/x/pam.sock\n", check: func(c Config) bool { return c.MFA.Socket == "/tmp/x/pam.sock" }},
		{name: "relative mfa socket", yaml: "mfa:\n  socket: pam.sock\n", wantErr: "mfa.socket"},
		{name: "mfa defaults", yaml: "", check: func(c Config) bool {
			return slices.Equal(c.MFA.Services, []string{"login", "gdm-password", "lightdm", "sshd", "sudo"}) && c.MFA.PamDir == "/etc/pam.d"
		}},
		{name: "mfa services replace the defaults", yaml: "mfa:\n  services: [sshd, xrdp-sesman, polkit-1]\n  pam_dir: /tmp/pam.d\n",
			check: func(c Config) bool {
				return slices.Equal(c.MFA.Services, []string{"sshd", "xrdp-sesman", "polkit-1"}) && c.MFA.PamDir == "/tmp/pam.d"
			}},
		{name: "empty mfa services", yaml: "mfa:\n  services: []\n", wantErr: "mfa.services: empty"},
		{name: "null mfa services", yaml: "mfa:\n  services:\n", wantErr: "mfa.services: empty"},
		{name: "mfa service with slash", yaml: "mfa:\n  services: [../shadow]\n", wantErr: `mfa.services: "../shadow"`},
		{name: "mfa service dot-dot", yaml: "mfa:\n  services: [\"..\"]\n", wantErr: "mfa.services"},
		{name: "mfa service with space", yaml: "mfa:\n  services: [\"ss hd\"]\n", wantErr: "mfa.services"},
		{name: "mfa service too long", yaml: "mfa:\n  services: [" + strings.Repeat("s", 65) + "]\n", wantErr: "mfa.services"},
		{name: "mfa service twice", yaml: "mfa:\n  services: [sshd, login, sshd]\n", wantErr: `"sshd" is listed twice`},
		{name: "mfa services not a list", yaml: "mfa:\n  services: sshd\n", wantErr: "cannot unmarshal"},
		{name: "relative pam_dir", yaml: "mfa:\n  pam_dir: etc/pam.d\n", wantErr: "mfa.pam_dir"},
		{name: "empty pam_dir", yaml: "mfa:\n  pam_dir: \"\"\n", wantErr: "mfa.pam_dir"},
		{name: "network defaults", yaml: "", check: func(c Config) bool {
			return c.Network.SysfsRoot == "" && c.Network.ResolvConf == "" && len(c.Network.TestOverrides()) == 0
		}},
		{name: "network overrides", yaml: "network:\n  sysfs_root: /tmp/t/sys\n  resolv_conf: /tmp/t/resolv.conf\n",
			check: func(c Config) bool {
				return c.Network.SysfsRoot == "/tmp/t/sys" && c.Network.ResolvConf == "/tmp/t/resolv.conf" &&
					slices.Equal(c.Network.TestOverrides(), []string{"network.sysfs_root=/tmp/t/sys", "network.resolv_conf=/tmp/t/resolv.conf"})
			}},
		{name: "relative sysfs_root", yaml: "network:\n  sysfs_root: sys\n", wantErr: "network.sysfs_root"},
		{name: "sysfs_root is /", yaml: "network:\n  sysfs_root: /\n", wantErr: "network.sysfs_root"},
		{name: "unclean sysfs_root", yaml: "network:\n  sysfs_root: /tmp/../sys/\n", wantErr: "not a clean path"},
		{name: "relative resolv_conf", yaml: "network:\n  resolv_conf: resolv.conf\n", wantErr: "network.resolv_conf"},
		{name: "resolv_conf with NUL", yaml: "network:\n  resolv_conf: \"/tmp/a\\0b\"\n", wantErr: "network.resolv_conf"},
		{name: "resolv_conf too long", yaml: "network:\n  resolv_conf: /" + strings.Repeat("r", 4096) + "\n", wantErr: "network.resolv_conf"},
		{name: "unknown network key", yaml: "network:\n  enforce: true\n", wantErr: "field enforce not found"},
		{name: "empty state dir", yaml: "state_dir: \"\"\n", wantErr: "state_dir"},
		{name: "not a map", yaml: "- a\n- b\n", wantErr: "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			err := Parse([]byte(tt.yaml), &cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("config = %+v", cfg)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("server: c.example:8443\nreport_interval: 60s\n"))
	f.Add([]byte("log_level: [1, 2]\n"))
	f.Add([]byte("server: [a:1, b:2]\n"))
	f.Add([]byte("server:\n  - '[::1]:8443'\n  - b.example:8443\n"))
	f.Add([]byte("server: [[x]]\n"))
	f.Add([]byte("network:\n  sysfs_root: /tmp/sys\n  resolv_conf: /tmp/resolv.conf\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		if err := Parse(data, &cfg); err == nil {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
			}
			// Every address accepted is one ParseServers accepts too.
			if len(cfg.Server) > 0 {
				again, err := ParseServers(cfg.Server.String())
				if err != nil || !slices.Equal(again, cfg.Server) {
					t.Fatalf("server %q: ParseServers = %q, %v", cfg.Server, again, err)
				}
			}
		}
	})
}

func TestParseServers(t *testing.T) {
	got, err := ParseServers(" a.example:8443, b.example:8443 ,")
	if err != nil || !slices.Equal(got, Servers{"a.example:8443", "b.example:8443"}) {
		t.Errorf("ParseServers = %q, %v", got, err)
	}
	for _, bad := range []string{"a.example", "a.example:0", "a:1,a:1", ":8443", "a\x00b:1"} {
		if _, err := ParseServers(bad); err == nil {
			t.Errorf("ParseServers(%q) accepted", bad)
		}
	}
}
