//go:build linux

package pamstack

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// need fails under CI=true and skips otherwise when a prerequisite is missing.
func need(t *testing.T, ok bool, msg string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: not skipping)", msg)
	}
	t.Skip(msg)
}

// TestPamAuthUpdate runs the real pam-auth-update --enable mnguard on a copy of a
// Debian 12 /etc/pam.d (its --root option) and judges what it wrote. pam-auth-update
// also writes its debconf database, so it runs in a private mount namespace with a
// throw-away copy of /var/cache/debconf mounted over the real one. Needs root, Debian's
// libpam-runtime, unshare and mount.
func TestPamAuthUpdate(t *testing.T) {
	need(t, os.Geteuid() == 0, "needs root (a mount namespace for debconf)")
	for _, tool := range []string{"pam-auth-update", "unshare", "mount"} {
		_, err := exec.LookPath(tool)
		need(t, err == nil, tool+" not found (apt-get install libpam-runtime util-linux mount)")
	}
	_, err := os.Stat("/var/cache/debconf/config.dat")
	need(t, err == nil, "no debconf database in /var/cache/debconf")

	root := t.TempDir()
	copyTree(t, "testdata/debian12", root)
	copyTree(t, "testdata/pam-auth-update/var/lib/pam", filepath.Join(root, "var/lib/pam"))
	configs := filepath.Join(root, "usr/share/pam-configs")
	copyTree(t, "testdata/pam-auth-update/pam-configs", configs)
	prof, err := os.ReadFile(profilePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(configs, "mnguard"), prof, 0o644); err != nil {
		t.Fatal(err)
	}
	debconf := t.TempDir()
	copyTree(t, "/var/cache/debconf", debconf)

	cmd := exec.Command("unshare", "-m", "sh", "-ec",
		`mount --make-rprivate /
mount --bind "$1" /var/cache/debconf
exec pam-auth-update --root "$2" --enable mnguard`, "sh", debconf, root)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pam-auth-update: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(root, "etc/pam.d/common-auth"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/pam-auth-update/common-auth.golden")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("pam-auth-update wrote:\n%s\nthe golden file (our rendering) has:\n%s", got, want)
	}
	checkEnabled(t, string(got))
}
