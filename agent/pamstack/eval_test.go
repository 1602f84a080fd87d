package pamstack

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

// debianFS is the Debian 12 tree in testdata/debian12 with files of /etc/pam.d
// replaced or added; an empty content removes the file, a name ending in "/" makes
// a directory.
func debianFS(t *testing.T, files map[string]string) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	dir := "testdata/debian12/etc/pam.d"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fsys["etc/pam.d/"+e.Name()] = &fstest.MapFile{Data: data, Mode: 0o644}
	}
	fsPath := func(name string) string {
		if !strings.HasPrefix(name, "/") {
			name = "etc/pam.d/" + name
		}
		return strings.TrimPrefix(name, "/")
	}
	for name, text := range files { // removals first
		if text == "" && !strings.HasSuffix(name, "/") {
			delete(fsys, fsPath(name))
		}
	}
	for name, text := range files {
		p := fsPath(name)
		switch {
		case strings.HasSuffix(p, "/"):
			fsys[strings.TrimSuffix(p, "/")] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
		case text != "":
			fsys[p] = &fstest.MapFile{Data: []byte(text), Mode: 0o644}
		}
	}
	return fsys
}

// The common-auth pam-auth-update writes with our profile enabled (Debian 12).
const mfaCommonAuth = `# here are the per-package modules (the "Primary" block)
auth	[success=1 default=ignore]	pam_unix.so nullok
# here's the fallback if no module succeeds
auth	requisite			pam_deny.so
auth	required			pam_permit.so
# and here are more per-package modules (the "Additional" block)
auth	required	pam_mnguard.so socket=/run/mnguard/pam.sock
auth	optional			pam_cap.so
# end of pam-auth-update config
`

// sshdWith is Debian's sshd with auth lines after "@include common-auth".
func sshdWith(lines string) string {
	return "# PAM configuration for the Secure Shell service\n@include common-auth\n" + lines +
		"account    required     pam_nologin.so\n@include common-account\n@include common-session\n@include common-password\n"
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		service  string
		present  bool
		required bool
		line     string // want ModuleLine
		reason   string // want Reason to contain this
	}{
		{
			name: "stock Debian 12", service: "sshd", present: true,
			reason: "pam_mnguard.so is not in the auth stack",
		},
		{
			name: "absent service", service: "lightdm",
			files: map[string]string{"lightdm": ""},
		},
		{
			name: "required after common-auth", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": sshdWith("auth required pam_mnguard.so socket=/run/mnguard/pam.sock\n")},
			line:  "required socket=/run/mnguard/pam.sock",
		},
		{
			name: "requisite, absolute path, continued line", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": sshdWith("auth \\\n   requisite /lib/x86_64-linux-gnu/security/pam_mnguard.so \\\n\tdebug\n")},
			line:  "requisite debug",
		},
		{
			name: "dash only silences the log", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": sshdWith("-auth required pam_mnguard.so\n")},
			line:  "required",
		},
		{
			name: "commented out", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("#auth required pam_mnguard.so\nauth optional pam_cap.so # pam_mnguard.so\n")},
			reason: "pam_mnguard.so is not in the auth stack",
		},
		{
			name: "optional", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("auth optional pam_mnguard.so\n")},
			line:   "optional",
			reason: "optional pam_mnguard.so (sshd:3): a refused code (auth_err) is ignored",
		},
		{
			name: "sufficient", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("auth sufficient pam_mnguard.so\n")},
			reason: "a refused code (auth_err) is ignored",
		},
		{
			name: "bracketed fatal", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": sshdWith("auth [success=ok new_authtok_reqd=ok ignore=ignore default=die] pam_mnguard.so\n")},
			line:  "[success=ok new_authtok_reqd=ok ignore=ignore default=die]",
		},
		{
			name: "bracketed, only auth_err fatal", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("auth [success=ok auth_err=bad default=ignore] pam_mnguard.so\n")},
			reason: "is ignored",
		},
		{
			name: "bracketed syntax error is all bad", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": sshdWith("auth [success=ok default=ignroe] pam_mnguard.so\n")},
		},
		{
			name: "sufficient module before", service: "sshd", present: true,
			files:  map[string]string{"sshd": "auth sufficient pam_unix.so\nauth required pam_mnguard.so\nauth required pam_deny.so\n"},
			reason: "sufficient pam_unix.so (sshd:1) ends the stack on success before pam_mnguard.so (sshd:2)",
		},
		{
			name: "sufficient module after a failed required one", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "auth required pam_mnguard.so\nauth sufficient pam_permit.so\n"},
		},
		{
			name: "jump over it in common-auth", service: "sshd", present: true,
			files: map[string]string{"common-auth": "auth [success=2 default=ignore] pam_unix.so nullok\n" +
				"auth [success=1 default=ignore] pam_mnguard.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n"},
			reason: "[success=2 default=ignore] pam_unix.so (common-auth:1) jumps over pam_mnguard.so (common-auth:2) on success",
		},
		{
			name: "sole primary module, pam_deny fails", service: "sshd", present: true, required: true,
			files: map[string]string{"common-auth": "auth [success=1 default=ignore] pam_mnguard.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n"},
		},
		{
			name: "in common-auth after pam_permit", service: "sudo", present: true, required: true,
			files: map[string]string{"common-auth": mfaCommonAuth},
			line:  "required socket=/run/mnguard/pam.sock",
		},
		{
			name: "in common-auth after pam_permit, but sufficient", service: "sudo", present: true,
			files:  map[string]string{"common-auth": strings.Replace(mfaCommonAuth, "required\tpam_mnguard", "sufficient\tpam_mnguard", 1)},
			reason: "is ignored",
		},
		{
			name: "reset after it", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("auth required pam_mnguard.so\nauth [success=ok default=reset] pam_env.so\nauth required pam_permit.so\n")},
			reason: "[success=ok default=reset] pam_env.so (sshd:4) resets the stack",
		},
		{
			name: "include loop", service: "sshd", present: true,
			files: map[string]string{
				"sshd":       sshdWith("auth include mfa-a\n"),
				"mfa-a":      "auth required pam_mnguard.so\n@include mfa-b\n",
				"mfa-b":      "auth include mfa-a\n",
				"common-foo": "auth required pam_permit.so\n",
			},
			reason: "include loop: mfa-a → mfa-b → mfa-a",
		},
		{
			name: "include nested too deep", service: "sshd", present: true,
			files: func() map[string]string {
				m := map[string]string{"sshd": "auth include d1\n"}
				for i := 1; i < 20; i++ {
					m["d"+strconv.Itoa(i)] = "auth include d" + strconv.Itoa(i+1) + "\n"
				}
				m["d20"] = "auth required pam_mnguard.so\n"
				return m
			}(),
			reason: "includes nested deeper than 16 levels",
		},
		{
			name: "missing include holding the module", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("@include common-mfa\n")},
			reason: "pam_mnguard.so is not in the auth stack; @include common-mfa (sshd:3, file missing)",
		},
		{
			// libpam turns a missing include into a line that always fails.
			name: "missing include fails the stack", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "auth required pam_permit.so\nauth include common-mfa\nauth optional pam_mnguard.so\n"},
		},
		{
			name: "unreadable service file", service: "sshd", present: true,
			files:  map[string]string{"sshd": "", "sshd/": ""},
			reason: "read sshd: not a regular file",
		},
		{
			name: "unreadable include", service: "sshd", present: true,
			files:  map[string]string{"sshd": sshdWith("auth required pam_mnguard.so\n"), "common-auth": "", "common-auth/": ""},
			reason: "read common-auth: not a regular file",
		},
		{
			name: "file ends inside a continued line", service: "sshd", present: true,
			files:  map[string]string{"sshd": "@include common-auth\nauth required pam_mnguard.so \\\n"},
			reason: "sshd: file ends inside a continued line",
		},
		{
			// done in a substack ends only the substack.
			name: "substack keeps sufficient inside", service: "sshd", present: true, required: true,
			files: map[string]string{
				"sshd":        "auth substack system-auth\nauth required pam_mnguard.so\n",
				"system-auth": "auth sufficient pam_unix.so\nauth required pam_deny.so\n",
			},
		},
		{
			name: "include lets sufficient end everything", service: "sshd", present: true,
			files: map[string]string{
				"sshd":        "auth include system-auth\nauth required pam_mnguard.so\n",
				"system-auth": "auth sufficient pam_unix.so\nauth required pam_deny.so\n",
			},
			reason: "sufficient pam_unix.so (system-auth:1) ends the stack on success before pam_mnguard.so (sshd:2)",
		},
		{
			// A jump counts a whole substack as one module.
			name: "jump over a substack", service: "sshd", present: true,
			files: map[string]string{
				"sshd": "auth [success=2 default=ignore] pam_unix.so\nauth substack mnguard-auth\n" +
					"auth requisite pam_deny.so\nauth required pam_permit.so\n",
				"mnguard-auth": "auth required pam_mnguard.so\nauth optional pam_cap.so\n",
			},
			reason: "[success=2 default=ignore] pam_unix.so (sshd:1) jumps over pam_mnguard.so (mnguard-auth:1) on success",
		},
		{
			name: "module in a substack", service: "sshd", present: true, required: true,
			files: map[string]string{
				"sshd":         "@include common-auth\nauth substack mnguard-auth\n",
				"mnguard-auth": "auth required pam_mnguard.so\nauth optional pam_cap.so\n",
			},
		},
		{
			name: "absolute include from /usr/lib/pam.d", service: "sshd", present: true, required: true,
			files: map[string]string{
				"sshd":                        "@include common-auth\nauth include /usr/lib/pam.d/mnguard-auth\n",
				"/usr/lib/pam.d/mnguard-auth": "auth required pam_mnguard.so\n",
			},
		},
		{
			name: "service from /usr/lib/pam.d", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "", "/usr/lib/pam.d/sshd": sshdWith("auth required pam_mnguard.so\n")},
		},
		{
			name: "no auth lines: other", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "account required pam_unix.so\n", "other": "@include common-auth\nauth required pam_mnguard.so\n"},
		},
		{
			name: "unknown type fails as auth", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "auth required pam_permit.so\nauht required pam_permit.so\nauth optional pam_mnguard.so\n"},
		},
		{
			name: "bad jump fails", service: "sshd", present: true, required: true,
			files: map[string]string{"sshd": "auth required pam_permit.so\nauth [success=ok default=5] pam_mnguard.so\nauth optional pam_cap.so\n"},
		},
		{
			name: "CRLF file: module path is not pam_mnguard.so", service: "sshd", present: true,
			files:  map[string]string{"sshd": "@include common-auth\r\nauth required pam_mnguard.so\r\n"},
			reason: "pam_mnguard.so is not in the auth stack",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Evaluate(debianFS(t, tt.files), tt.service)
			if r.Present != tt.present || r.Required != tt.required {
				t.Fatalf("present %v required %v (reason %q), want present %v required %v",
					r.Present, r.Required, r.Reason, tt.present, tt.required)
			}
			if tt.line != "" && r.ModuleLine != tt.line {
				t.Errorf("module line %q, want %q", r.ModuleLine, tt.line)
			}
			if tt.required || !tt.present {
				if r.Reason != "" {
					t.Errorf("reason %q, want none", r.Reason)
				}
			} else if tt.reason == "" || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", r.Reason, tt.reason)
			}
			if strings.Contains(r.Reason, "\n") {
				t.Errorf("reason spans lines: %q", r.Reason)
			}
		})
	}
}

func TestInspectDebian12(t *testing.T) {
	got := Inspect("testdata/debian12", DefaultServices)
	if len(got) != len(DefaultServices) {
		t.Fatalf("%d services, want %d", len(got), len(DefaultServices))
	}
	for i, s := range got {
		if s.GetName() != DefaultServices[i] || !s.GetPresent() || s.GetMfaRequired() ||
			s.GetModuleLine() != "" || s.GetReason() != "pam_mnguard.so is not in the auth stack" {
			t.Errorf("%v", s)
		}
	}
}

func TestPosture(t *testing.T) {
	const sock = "/run/mnguard/pam.sock"
	mfa := map[string]string{"common-auth": mfaCommonAuth}
	noLightdm := map[string]string{"common-auth": mfaCommonAuth, "lightdm": ""}
	tests := []struct {
		name     string
		files    map[string]string
		socket   string
		serving  bool
		enforced bool
		reason   string
	}{
		{name: "enforced", files: noLightdm, socket: sock, serving: true, enforced: true},
		{name: "not serving", files: noLightdm, socket: sock, reason: "the agent does not serve /run/mnguard/pam.sock"},
		{name: "lightdm bypass", files: mfa, socket: sock, serving: true, reason: "lightdm: sufficient pam_succeed_if.so"},
		{name: "stock", socket: sock, serving: true, reason: "login: pam_mnguard.so is not in the auth stack"},
		{name: "other socket", files: noLightdm, socket: "/run/other.sock", serving: true,
			reason: "login: pam_mnguard.so asks /run/mnguard/pam.sock, the agent serves /run/other.sock"},
		{name: "none present", socket: sock, serving: true, reason: "none of the PAM services",
			files: map[string]string{"login": "", "gdm-password": "", "lightdm": "", "sshd": "", "sudo": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := PostureFS(debianFS(t, tt.files), DefaultServices, tt.socket, tt.serving)
			if p.GetEnforced() != tt.enforced || p.GetSocket() != tt.socket || p.GetSocketServing() != tt.serving {
				t.Fatalf("%v", p)
			}
			if len(p.GetServices()) != len(DefaultServices) {
				t.Errorf("%d services", len(p.GetServices()))
			}
			if tt.enforced != (p.GetReason() == "") || !strings.Contains(p.GetReason(), tt.reason) {
				t.Errorf("reason %q, want %q", p.GetReason(), tt.reason)
			}
		})
	}
	t.Run("windows", func(t *testing.T) {
		old := goos
		goos = "windows"
		defer func() { goos = old }()
		p := PostureFS(debianFS(t, noLightdm), DefaultServices, sock, true)
		if p.GetEnforced() || p.GetReason() == "" || len(p.GetServices()) != 0 {
			t.Errorf("%v", p)
		}
	})
}
