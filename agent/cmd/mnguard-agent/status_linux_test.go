//go:build linux

package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/agent/config"
)

// TestStatusLoginGate connects to a real socket and reads real PAM files.
func TestStatusLoginGate(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "pam.sock")
	pamDir := filepath.Join(dir, "etc", "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"login": "auth required pam_unix.so\nauth required pam_mnguard.so socket=" + sock + "\n",
		"sshd":  "auth sufficient pam_unix.so\nauth required pam_mnguard.so socket=" + sock + "\n",
	} {
		if err := os.WriteFile(filepath.Join(pamDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default().MFA
	cfg.Socket, cfg.PamDir, cfg.Services = sock, pamDir, []string{"login", "sshd", "sudo"}

	var out bytes.Buffer
	if loginGate(&out, cfg) {
		t.Error("no socket: status is ok")
	}
	for _, want := range []string{"Login gate:  NOT serving " + sock, "refused", "MFA:         NOT enforced: the agent does not serve",
		"  PAM login: requires pam_mnguard", "  PAM sshd: DOES NOT require pam_mnguard: ", "  PAM sudo: not installed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out.Reset()
	if !loginGate(&out, cfg) {
		t.Error("socket served: status is not ok")
	}
	for _, want := range []string{"Login gate:  serving " + sock, "MFA:         NOT enforced: sshd: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	cfg.Services = []string{"login"}
	out.Reset()
	loginGate(&out, cfg)
	if !strings.Contains(out.String(), "MFA:         enforced\n") {
		t.Errorf("login only:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
