//go:build linux

package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/config"
)

// writeFiles writes name → content under root, making directories.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	unixOnly = "auth required pam_unix.so\n"
	withMFA  = "auth required pam_unix.so\nauth required pam_mnguard.so socket=/run/mnguard/pam.sock\n"
)

// TestMFAPosture reads real PAM files from mfa.pam_dir: a directory that
// ends in etc/pam.d is read as a root (its /usr/lib/pam.d and absolute
// includes too), any other directory as the service files alone.
func TestMFAPosture(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"etc/pam.d/login":        "@include common-auth\n",
		"etc/pam.d/common-auth":  withMFA,
		"etc/pam.d/sshd":         "auth include /etc/mnguard-auth\n",
		"etc/mnguard-auth":       withMFA,
		"usr/lib/pam.d/sudo":     withMFA,
		"etc/pam.d/other-no-mfa": unixOnly,
	})
	cfg := config.Default().MFA
	cfg.PamDir = filepath.Join(root, "etc", "pam.d")
	cfg.Services = []string{"login", "sshd", "sudo", "lightdm"}

	p := MFAPosture(cfg, true)
	if !p.GetEnforced() || p.GetReason() != "" || p.GetSocket() != "/run/mnguard/pam.sock" || !p.GetSocketServing() {
		t.Fatalf("posture %v, want enforced", p)
	}
	for _, s := range p.GetServices() {
		if want := s.GetName() != "lightdm"; s.GetPresent() != want || s.GetMfaRequired() != want {
			t.Errorf("service %v", s)
		}
	}
	if p := MFAPosture(cfg, false); p.GetEnforced() || !strings.Contains(p.GetReason(), "does not serve") {
		t.Errorf("not serving: %v", p)
	}
	cfg.Services = append(cfg.Services, "other-no-mfa")
	if p := MFAPosture(cfg, true); p.GetEnforced() || !strings.Contains(p.GetReason(), "other-no-mfa") {
		t.Errorf("a service without the module: %v", p)
	}

	// A plain directory: only its files, no vendor directory, no includes outside.
	flat := t.TempDir()
	writeFiles(t, flat, map[string]string{"login": withMFA, "sshd": "auth include /etc/mnguard-auth\n"})
	cfg.PamDir = flat
	cfg.Services = []string{"login", "sudo"}
	if p := MFAPosture(cfg, true); !p.GetEnforced() || p.GetServices()[1].GetPresent() {
		t.Errorf("flat directory: %v", p)
	}
	cfg.Services = []string{"sshd"}
	if p := MFAPosture(cfg, true); p.GetEnforced() {
		t.Errorf("an include outside a flat directory was followed: %v", p)
	}
	cfg.PamDir = filepath.Join(flat, "missing")
	cfg.Services = []string{"login"}
	if p := MFAPosture(cfg, true); p.GetEnforced() || !strings.Contains(p.GetReason(), "none of the PAM services") {
		t.Errorf("missing directory: %v", p)
	}
}

// TestMFAPostureServing: the posture says the socket is served exactly
// while the login gate serves it.
func TestMFAPostureServing(t *testing.T) {
	pamDir := t.TempDir()
	var sock string
	g := startGate(t, closedAddr(t), false, func(c *config.Config) {
		c.MFA.PamDir = pamDir
		c.MFA.Services = []string{"login"}
		sock = c.MFA.Socket
	})
	writeFiles(t, pamDir, map[string]string{"login": "auth required pam_mnguard.so socket=" + sock + "\n"})
	if p := g.d.mfaPosture(); !p.GetEnforced() || !p.GetSocketServing() || p.GetSocket() != g.sock {
		t.Fatalf("while serving: %v", p)
	}
	g.stop()
	deadline := time.Now().Add(5 * time.Second)
	for g.d.mfaPosture().GetSocketServing() {
		if time.Now().After(deadline) {
			t.Fatal("still serving after the gate stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p := g.d.mfaPosture(); p.GetEnforced() {
		t.Errorf("enforced without the gate: %v", p)
	}
}
