package pamstack

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// profilePath is the pam-auth-update profile the packages install as
// /usr/share/pam-configs/mnguard.
const profilePath = "../../installer/linux/pam-configs/mnguard"

// profile is a pam-auth-update profile, parsed as parse_pam_profile does.
type profile struct {
	name   string
	fields map[string]string
}

func readProfile(t *testing.T, name, file string) profile {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := profile{name: name, fields: map[string]string{}}
	field := regexp.MustCompile(`^(\S+):\s+(.*?)\s*$`)
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text() + "\n"
		if m := field.FindStringSubmatch(line); m != nil {
			cur = strings.TrimSuffix(m[1], "-Final")
			p.fields[cur] = m[2]
			continue
		}
		if l := strings.TrimSpace(line); l != "" {
			p.fields[cur] = strings.TrimLeft(p.fields[cur]+"\n"+l, "\n \t")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return p
}

// renderCommonAuth writes common-auth from the stock template and the enabled
// profiles the way pam-auth-update's create_from_template does for the auth type:
// profiles by descending priority (then name), the Primary block with "end" jumps
// resolved to the lines left, pam_deny and pam_permit from the template, then the
// Additional block.
func renderCommonAuth(t *testing.T, template string, profiles []profile) string {
	t.Helper()
	slices.SortFunc(profiles, func(a, b profile) int {
		pa, _ := strconv.Atoi(a.fields["Priority"])
		pb, _ := strconv.Atoi(b.fields["Priority"])
		return cmp.Or(cmp.Compare(pb, pa), cmp.Compare(b.name, a.name))
	})
	linesOf := func(block string) []string {
		var out []string
		i := 0
		for _, p := range profiles {
			if p.fields["Auth-Type"] != block {
				continue
			}
			text := p.fields["Auth"]
			if init, ok := p.fields["Auth-Initial"]; ok && i == 0 {
				text = init
			}
			i++
			for _, l := range strings.Split(text, "\n") {
				if l != "" {
					out = append(out, l)
				}
			}
		}
		return out
	}
	modline := regexp.MustCompile(`^((\[[^]]+\]|\w+)\s+\S+)\s*(.*)`)
	emit := func(b *strings.Builder, lines []string, count int) {
		for _, l := range lines {
			m := modline.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("profile line %q", l)
			}
			opts := strings.Fields(m[3])
			fmt.Fprintf(b, "auth\t%s %s\n", strings.ReplaceAll(m[1], "end", strconv.Itoa(count)), strings.Join(opts, " "))
			count--
		}
	}
	var b strings.Builder
	state := 0
	for _, l := range strings.SplitAfter(template, "\n") {
		switch {
		case state == 1:
			if strings.HasPrefix(l, "# here's the fallback if no module succeeds") {
				b.WriteString(l)
				state++
			}
			continue
		case state == 3:
			if strings.HasPrefix(l, "# end of pam-auth-update config") {
				b.WriteString(l)
				state++
			}
			continue
		}
		b.WriteString(l)
		switch {
		case state == 0 && strings.HasPrefix(l, `# here are the per-package modules (the "Primary" block)`):
			lines := linesOf("Primary")
			if len(lines) == 0 {
				b.WriteString("auth\t[default=1]\t\t\tpam_permit.so\n")
			}
			emit(&b, lines, len(lines))
			state++
		case state == 2 && strings.HasPrefix(l, `# and here are more per-package modules (the "Additional" block)`):
			lines := linesOf("Additional")
			emit(&b, lines, len(lines)-1)
			state++
		}
	}
	if state < 4 {
		t.Fatalf("template lacks the pam-auth-update markers (state %d)", state)
	}
	return b.String()
}

func stockProfiles(t *testing.T) []profile {
	return []profile{
		readProfile(t, "unix", "testdata/pam-auth-update/pam-configs/unix"),
		readProfile(t, "capability", "testdata/pam-auth-update/pam-configs/capability"),
	}
}

// fields normalizes blanks, which pam-auth-update keeps from the profile text.
func fields(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(out, "\n")
}

// TestRenderStock checks the renderer against Debian 12's own result: with the stock
// profiles it must reproduce the common-auth pam-auth-update wrote.
func TestRenderStock(t *testing.T) {
	tmpl, err := os.ReadFile("testdata/pam-auth-update/common-auth.template")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/debian12/etc/pam.d/common-auth")
	if err != nil {
		t.Fatal(err)
	}
	got := renderCommonAuth(t, string(tmpl), stockProfiles(t))
	if fields(got) != fields(string(want)) {
		t.Errorf("rendered stock common-auth differs from Debian's:\n%s\nwant:\n%s", got, want)
	}
}

// TestProfile renders common-auth with our profile enabled, compares it with the
// golden file and judges the Debian 12 services with it.
func TestProfile(t *testing.T) {
	tmpl, err := os.ReadFile("testdata/pam-auth-update/common-auth.template")
	if err != nil {
		t.Fatal(err)
	}
	profiles := append(stockProfiles(t), readProfile(t, "mnguard", profilePath))
	got := renderCommonAuth(t, string(tmpl), profiles)

	golden := "testdata/pam-auth-update/common-auth.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("rendered common-auth differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
	checkEnabled(t, got)
}

// checkEnabled judges the Debian 12 services with commonAuth as common-auth.
func checkEnabled(t *testing.T, commonAuth string) {
	t.Helper()
	fsys := debianFS(t, map[string]string{"common-auth": commonAuth})
	for _, svc := range []string{"login", "sshd", "sudo", "gdm-password", "other"} {
		r := Evaluate(fsys, svc)
		if !r.Required || r.ModuleLine != "required socket=/run/mnguard/pam.sock" || r.Socket != DefaultSocket {
			t.Errorf("%s: %+v, want required with socket=%s", svc, r, DefaultSocket)
		}
	}
	// lightdm lets the nopasswdlogin group in before common-auth: a real bypass.
	r := Evaluate(fsys, "lightdm")
	if r.Required || !strings.Contains(r.Reason, "sufficient pam_succeed_if.so (lightdm:3) ends the stack on success before pam_mnguard.so (common-auth:") {
		t.Errorf("lightdm: %+v", r)
	}
	// su trusts root.
	r = Evaluate(fsys, "su")
	if r.Required || !strings.Contains(r.Reason, "sufficient pam_rootok.so") {
		t.Errorf("su: %+v", r)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
