package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/server/api"
)

// TestServeLoginFlags: bad TOTP login flags (or their environment
// variables) stop serve before it starts, with a message naming the flag.
func TestServeLoginFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"negative window", []string{"--login-window", "-1"}, nil, "--login-window -1: must be 0 to 10"},
		{"wide window", []string{"--login-window", "11"}, nil, "--login-window 11"},
		{"negative delay after", []string{"--login-delay-after", "-1"}, nil, "--login-delay-after -1"},
		{"negative delay", []string{"--login-delay", "-1s"}, nil, "--login-delay -1s"},
		{"long delay", []string{"--login-delay", "30s"}, nil, "--login-delay 30s: must be 0 to 5s"},
		{"never lock", []string{"--login-lock-after", "0"}, nil, "--login-lock-after 0: must be 1 to 100"},
		{"negative lock", []string{"--login-lock-after", "-3"}, nil, "--login-lock-after -3"},
		{"empty issuer", []string{"--totp-issuer", ""}, nil, "--totp-issuer: empty"},
		{"control in issuer", []string{"--totp-issuer", "a\tb"}, nil, "--totp-issuer: login policy: issuer contains control character U+0009"},
		{"env lock", nil, map[string]string{"MNGUARD_LOGIN_LOCK_AFTER": "0"}, "--login-lock-after 0"},
		{"env not a number", nil, map[string]string{"MNGUARD_LOGIN_WINDOW": "one"}, "MNGUARD_LOGIN_WINDOW: parse error"},
		{"flag beats env", []string{"--login-delay", "9s"}, map[string]string{"MNGUARD_LOGIN_DELAY": "1s"}, "--login-delay 9s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return tt.env[k] })
			if code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

func TestServeHelpListsLoginFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "-h"}, &stdout, &stderr, func(string) string { return "" }); code != 2 {
		t.Fatalf("serve -h: exit %d", code)
	}
	for _, f := range []string{"-login-window", "-login-delay-after", "-login-delay", "-login-lock-after", "-totp-issuer", "MNGUARD_LOGIN_LOCK_AFTER"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("serve -h does not mention %s", f)
		}
	}
}

// TestServeExemptionFlags: bad exemption durations (or their environment
// variables) stop serve before it starts, with a message naming the flag.
func TestServeExemptionFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"max too short", []string{"--exemption-max-duration", "30s"}, nil, "--exemption-max-duration 30s: must be 1m0s to 24h0m0s"},
		{"max too long", []string{"--exemption-max-duration", "25h"}, nil, "--exemption-max-duration 25h0m0s"},
		{"default over max", []string{"--exemption-max-duration", "2h", "--exemption-default-duration", "3h"}, nil,
			"--exemption-default-duration 3h0m0s: must be 1m0s to --exemption-max-duration (2h0m0s)"},
		{"default over the default max", []string{"--exemption-default-duration", "9h"}, nil, "--exemption-default-duration 9h0m0s"},
		{"zero default", []string{"--exemption-default-duration", "0"}, nil, "--exemption-default-duration 0s"},
		{"fractions", []string{"--exemption-default-duration", "90.5s"}, nil, "whole seconds"},
		{"env max", nil, map[string]string{"MNGUARD_EXEMPTION_MAX_DURATION": "48h"}, "--exemption-max-duration 48h0m0s"},
		{"env default", nil, map[string]string{"MNGUARD_EXEMPTION_DEFAULT_DURATION": "10s"}, "--exemption-default-duration 10s"},
		{"env not a duration", nil, map[string]string{"MNGUARD_EXEMPTION_MAX_DURATION": "8"}, "MNGUARD_EXEMPTION_MAX_DURATION: parse error"},
		{"flag beats env", []string{"--exemption-max-duration", "30h"}, map[string]string{"MNGUARD_EXEMPTION_MAX_DURATION": "4h"}, "--exemption-max-duration 30h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return tt.env[k] })
			if code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

func TestServeHelpListsExemptionFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "-h"}, &stdout, &stderr, func(string) string { return "" }); code != 2 {
		t.Fatalf("serve -h: exit %d", code)
	}
	for _, f := range []string{"-exemption-max-duration", "-exemption-default-duration", "MNGUARD_EXEMPTION_MAX_DURATION", "MNGUARD_EXEMPTION_DEFAULT_DURATION", "(default 8h0m0s)", "(default 1h0m0s)"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("serve -h does not mention %s", f)
		}
	}
}

// TestServeLimitFlags: bad connection and stream limits, or a metrics token
// file that cannot be used, stop serve before it starts, naming the flag or
// the file.
func TestServeLimitFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no connections", []string{"--max-conns-per-ip", "0"}, nil, "--max-conns-per-ip 0: must be 1 to 100000"},
		{"no streams", []string{"--max-streams-per-terminal", "0"}, nil, "--max-streams-per-terminal 0: must be 1 to 16"},
		{"many streams", []string{"--max-streams-per-terminal", "17"}, nil, "--max-streams-per-terminal 17"},
		{"env connections", nil, map[string]string{"MNGUARD_MAX_CONNS_PER_IP": "-1"}, "--max-conns-per-ip -1"},
		{"env not a number", nil, map[string]string{"MNGUARD_MAX_STREAMS_PER_TERMINAL": "two"}, "MNGUARD_MAX_STREAMS_PER_TERMINAL: parse error"},
		{"missing token file", []string{"--metrics-token-file", "/nonexistent/metrics.token"}, nil, "/nonexistent/metrics.token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return tt.env[k] })
			if code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

// TestMetricsCertCommand: metrics-cert needs an initialised data directory
// and an output directory, and writes a certificate the CA verifies.
func TestMetricsCertCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := func(string) string { return "" }
	if code := run(context.Background(), []string{"metrics-cert", "--data-dir", t.TempDir(), "--out", t.TempDir()}, &stdout, &stderr, env); code != 1 || !strings.Contains(stderr.String(), "run 'mnguard-server init' first") {
		t.Errorf("without a CA: exit %d, %q", code, stderr.String())
	}
	data := t.TempDir()
	if code := run(context.Background(), []string{"init", "--data-dir", data}, &stdout, &stderr, env); code != 0 {
		t.Fatalf("init: %s", stderr.String())
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"metrics-cert", "--data-dir", data}, &stdout, &stderr, env); code != 1 || !strings.Contains(stderr.String(), "--out") {
		t.Errorf("without --out: exit %d, %q", code, stderr.String())
	}
	out := t.TempDir()
	stdout.Reset()
	if code := run(context.Background(), []string{"metrics-cert", "--data-dir", data, "--out", out, "--validity", "720h"}, &stdout, &stderr, env); code != 0 {
		t.Fatalf("metrics-cert: %s", stderr.String())
	}
	for _, f := range []string{"metrics.crt", "metrics.key", "ca.crt"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("metrics-cert printed %q, not naming %s", stdout.String(), f)
		}
	}
}

// TestServeAdvertiseAddrs: --advertise-addr takes unicast IP addresses;
// anything else stops serve before it starts, naming the value.
func TestServeAdvertiseAddrs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"host name", []string{"--advertise-addr", "collector.example"}, nil, `--advertise-addr "collector.example": not an IP address`},
		{"cidr", []string{"--advertise-addr", "198.51.100.10/24"}, nil, `--advertise-addr "198.51.100.10/24": not an IP address`},
		{"unspecified", []string{"--advertise-addr", "0.0.0.0"}, nil, `--advertise-addr "0.0.0.0": not a unicast address`},
		{"multicast", []string{"--advertise-addr", "ff02::1"}, nil, `--advertise-addr "ff02::1": not a unicast address`},
		{"zone", []string{"--advertise-addr", "fe80::1%eth0"}, nil, "without a zone"},
		{"twice", []string{"--advertise-addr", "198.51.100.10", "--advertise-addr", "198.51.100.10"}, nil, "given twice"},
		{"env", nil, map[string]string{"MNGUARD_ADVERTISE_ADDR": "198.51.100.10,bogus"}, `--advertise-addr "bogus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return tt.env[k] })
			if code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
	got, err := parseAdvertiseAddrs([]string{"198.51.100.10", " 2001:db8::10"})
	if err != nil || len(got) != 2 || got[1].String() != "2001:db8::10" {
		t.Errorf("parseAdvertiseAddrs = %v, %v", got, err)
	}
}

// FuzzAdvertiseAddrs: whatever --advertise-addr is given, parsing never
// panics, and what it accepts is what the network policy may carry.
func FuzzAdvertiseAddrs(f *testing.F) {
	for _, s := range []string{"198.51.100.10", "2001:db8::10", "fe80::1%eth0", "0.0.0.0", "::ffff:198.51.100.10", "collector", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAdvertiseAddrs(strings.Split(s, ","))
		if err != nil {
			return
		}
		if err := api.CheckCollectorAddrs(got); err != nil {
			t.Fatalf("accepted %q, which the network policy refuses: %v", s, err)
		}
	})
}
