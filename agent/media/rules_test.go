package media

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestRulesGolden: the rules the installer ships are exactly what the agent
// generates for /usr/bin/mnguard-agent.
func TestRulesGolden(t *testing.T) {
	for name, got := range map[string][]byte{
		UdevRuleFile:   UdevRule("/usr/bin/mnguard-agent", ""),
		UdisksRuleFile: UdisksRule(),
	} {
		path := filepath.Join("..", "..", "installer", "linux", name)
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generated rule (go test -run TestRulesGolden -update ./agent/media/):\n%s", path, got)
		}
	}
}

func TestUdevRuleQuotesPaths(t *testing.T) {
	got := string(UdevRule("/opt/my agent/mnguard-agent", "/tmp/a b/agent.yaml"))
	want := `RUN+="'/opt/my agent/mnguard-agent' udev-hook --config '/tmp/a b/agent.yaml' %k"`
	if !bytes.Contains([]byte(got), []byte(want)) {
		t.Errorf("rule = %s\nwant it to contain %s", got, want)
	}
}

func TestInstalledLayers(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if u, d := InstalledLayers([]string{a, b}); u || d {
		t.Fatal("empty directories report installed rules")
	}
	os.WriteFile(filepath.Join(a, UdevRuleFile), UdevRule("/usr/bin/mnguard-agent", ""), 0o644)
	if u, d := InstalledLayers([]string{a, b}); !u || d {
		t.Errorf("udev rule only: got udev=%v udisks=%v", u, d)
	}
	os.WriteFile(filepath.Join(b, UdisksRuleFile), UdisksRule(), 0o644)
	if u, d := InstalledLayers([]string{a, b}); !u || !d {
		t.Errorf("both rules: got udev=%v udisks=%v", u, d)
	}
	os.WriteFile(filepath.Join(b, UdisksRuleFile), []byte("# emptied by someone\n"), 0o644)
	if _, d := InstalledLayers([]string{a, b}); d {
		t.Error("an emptied udisks rule counts as installed")
	}
}
