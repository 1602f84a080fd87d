package main

// These tests drive the real Windows service manager and registry. They run
// under Wine in make wine-test (scripts/wine/); on a real Windows machine the
// service test runs only with MNGUARD_TEST_SERVICE=1 (and as an
// administrator), because it installs and removes a service.

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/internal/testenv"
)

// tempDir returns t.TempDir and registers a cleanup, run before t.TempDir's
// own, that empties it with os.Remove. Under Wine 8.0 os.RemoveAll fails on
// any non-empty directory ("unlinkat ...: Invalid function"): Go 1.26
// deletes through NtSetInformationFile(FileDispositionInformationEx), which
// Wine 8.0 answers with STATUS_NOT_IMPLEMENTED, not STATUS_INVALID_INFO_CLASS
// that would make Go fall back to FileDispositionInformation. os.Remove goes
// through DeleteFileW and RemoveDirectoryW, which Wine implements.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		var paths []string
		_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				paths = append(paths, p)
			}
			return nil
		})
		for _, p := range slices.Backward(paths) {
			if err := os.Remove(p); err != nil {
				t.Errorf("remove %s: %v", p, err)
			}
		}
	})
	return dir
}

func noEnv(string) string { return "" }

// testServiceName is set through the configuration file's service_name, so
// the test never touches an installed agent's mnguard-agent service.
const testServiceName = "mnguard-agent-test"

const (
	serviceKey  = `SYSTEM\CurrentControlSet\Services\` + testServiceName
	eventLogKey = `SYSTEM\CurrentControlSet\Services\EventLog\Application\` + testServiceName
)

func TestServiceInstallUninstall(t *testing.T) {
	wine := testenv.WineVersion()
	if wine == "" && os.Getenv("MNGUARD_TEST_SERVICE") != "1" {
		t.Skip("installs and removes the " + testServiceName + " service: set MNGUARD_TEST_SERVICE=1 to run it on Windows")
	}
	t.Logf("Wine %q", wine)
	dir := tempDir(t)
	stateDir := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte("service_name: "+testServiceName+"\nlog_level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = stateDir
	cfg.LogLevel = "debug"
	cfg.ServiceName = testServiceName

	// A run that failed half-way may have left the service behind.
	if st := serviceState(cfg, cfgPath); st != "not installed as a service" {
		t.Logf("service left by an earlier run (%s): uninstalling it", st)
		if err := controlService("uninstall", cfg, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if serviceState(cfg, cfgPath) != "not installed as a service" {
			_ = controlService("uninstall", cfg, cfgPath)
		}
	})

	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"install", "--state-dir", stateDir, "--config", cfgPath}, &stdout, &stderr, noEnv)
	if code != 0 || stdout.String() != "mnguard-agent: install done\n" || stderr.Len() != 0 {
		t.Fatalf("install: exit %d, stdout %q, stderr %q; want 0 and \"mnguard-agent: install done\"", code, stdout.String(), stderr.String())
	}
	if got, want := serviceState(cfg, cfgPath), "installed, stopped (windows-service)"; got != want {
		t.Errorf("serviceState after install = %q, want %q", got, want)
	}

	// Installing twice fails and leaves the service as it was.
	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"install", "--state-dir", stateDir, "--config", cfgPath}, &stdout, &stderr, noEnv); code != 1 ||
		!strings.Contains(stderr.String(), "already exists") {
		t.Errorf("second install: exit %d, stderr %q; want 1 and \"already exists\"", code, stderr.String())
	}

	k, err := registry.OpenKey(registry.LOCAL_MACHINE, serviceKey, registry.QUERY_VALUE)
	if err != nil {
		t.Fatalf("open HKLM\\%s: %v", serviceKey, err)
	}
	image, _, err := k.GetStringValue("ImagePath")
	if err != nil {
		t.Fatalf("ImagePath: %v", err)
	}
	display, _, err := k.GetStringValue("DisplayName")
	if err != nil {
		t.Errorf("DisplayName: %v", err)
	}
	start, _, err := k.GetIntegerValue("Start")
	if err != nil {
		t.Errorf("Start: %v", err)
	}
	k.Close()
	t.Logf("ImagePath = %s", image)
	args, err := windows.DecomposeCommandLine(image)
	if err != nil {
		t.Fatalf("ImagePath %q: %v", image, err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := []string{exe, "run", "--state-dir", stateDir, "--config", cfgPath}
	if !slices.Equal(args, wantArgs) {
		t.Errorf("ImagePath arguments = %q, want %q", args, wantArgs)
	}
	if display != "mnguard agent" {
		t.Errorf("DisplayName = %q, want %q", display, "mnguard agent")
	}
	if start != windows.SERVICE_AUTO_START {
		t.Errorf("Start = %d, want %d (SERVICE_AUTO_START)", start, windows.SERVICE_AUTO_START)
	}

	// kardianos/service also registers an event log source.
	ev, err := registry.OpenKey(registry.LOCAL_MACHINE, eventLogKey, registry.QUERY_VALUE)
	if err != nil {
		t.Errorf("event log source: %v", err)
	} else {
		ev.Close()
	}

	// Restart on failure ("OnFailure": "restart" in serviceConfig).
	m, err := mgr.Connect()
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.OpenService(testServiceName)
	if err != nil {
		m.Disconnect()
		t.Fatal(err)
	}
	actions, err := s.RecoveryActions()
	s.Close()
	m.Disconnect()
	switch want := []mgr.RecoveryAction{{Type: mgr.ServiceRestart, Delay: time.Second}}; {
	case wine != "" && errors.Is(err, windows.ERROR_INVALID_LEVEL):
		// Wine 8.0's service manager accepts SERVICE_CONFIG_FAILURE_ACTIONS
		// in ChangeServiceConfig2W and drops it ("not implemented"), and
		// QueryServiceConfig2W answers ERROR_INVALID_LEVEL for it: restart
		// on failure can only be checked on Windows.
		t.Logf("recovery actions not checked: Wine has no SERVICE_CONFIG_FAILURE_ACTIONS (%v)", err)
	case err != nil:
		t.Errorf("RecoveryActions: %v", err)
	case !slices.Equal(actions, want):
		t.Errorf("recovery actions = %+v, want %+v", actions, want)
	}

	if err := controlService("uninstall", cfg, cfgPath); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if got, want := serviceState(cfg, cfgPath), "not installed as a service"; got != want {
		t.Errorf("serviceState after uninstall = %q, want %q", got, want)
	}
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, serviceKey, registry.QUERY_VALUE); !errors.Is(err, registry.ErrNotExist) {
		if err == nil {
			k.Close()
		}
		t.Errorf("open HKLM\\%s after uninstall: %v, want %v", serviceKey, err, registry.ErrNotExist)
	}
	if ev, err := registry.OpenKey(registry.LOCAL_MACHINE, eventLogKey, registry.QUERY_VALUE); !errors.Is(err, registry.ErrNotExist) {
		if err == nil {
			ev.Close()
		}
		t.Errorf("event log source after uninstall: %v, want %v", err, registry.ErrNotExist)
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"uninstall", "--state-dir", stateDir, "--config", cfgPath}, &stdout, &stderr, noEnv); code != 1 || stderr.Len() == 0 {
		t.Errorf("uninstall when not installed: exit %d, stderr %q; want 1 and a reason", code, stderr.String())
	}
}

func TestStatusNotEnrolled(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath()); err == nil {
		t.Skipf("%s exists: the test needs the built-in defaults", config.DefaultPath())
	}
	stateDir := tempDir(t)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flag", []string{"status", "--state-dir", stateDir}, nil},
		{"env", []string{"status"}, map[string]string{"MNGUARD_STATE_DIR": stateDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr, func(k string) string { return tc.env[k] })
			want := "Enrollment:  not enrolled (state directory " + stateDir + ")\n" +
				"Next step:   mnguard-agent enroll --server HOST:PORT --token T --ca-pin sha256:HEX\n"
			if code != 1 || stdout.String() != want || stderr.Len() != 0 {
				t.Errorf("status: exit %d, stdout %q, stderr %q; want exit 1, stdout %q", code, stdout.String(), stderr.String(), want)
			}
		})
	}
}

// A configuration file named with --config must exist: status fails before
// looking at the state directory.
func TestStatusMissingConfig(t *testing.T) {
	dir := tempDir(t)
	missing := filepath.Join(dir, "missing.yaml")
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"status", "--state-dir", dir, "--config", missing}, &stdout, &stderr, noEnv)
	if prefix := "mnguard-agent status: config: open " + missing + ": "; code != 1 || stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), prefix) {
		t.Errorf("status: exit %d, stdout %q, stderr %q; want exit 1 and stderr starting %q", code, stdout.String(), stderr.String(), prefix)
	}
}
