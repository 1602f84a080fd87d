package pamstack

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestAssemble(t *testing.T) {
	in := "#%PAM-1.0\n" +
		"\n" +
		"   auth  required pam_env.so   # read the environment\n" +
		"auth [success=1 \\\n" +
		"      default=ignore] \\  \n" +
		"\tpam_unix.so nullok\n" +
		"auth optional pam_a.so # a comment ends continuation \\\n" +
		"auth optional pam_b.so\n" +
		"auth optional pam_c.so \\\n" +
		"# the comment ends it\n" +
		"   \t \n" +
		"auth optional pam_d.so"
	got, err := assemble([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []logicalLine{
		{3, "auth  required pam_env.so   "},
		{4, "auth [success=1  default=ignore]  pam_unix.so nullok\n"},
		{7, "auth optional pam_a.so "},
		{8, "auth optional pam_b.so\n"},
		{9, "auth optional pam_c.so  "}, // its blank and the backslash's
		{12, "auth optional pam_d.so"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	if _, err := assemble([]byte("auth required pam_unix.so \\\n")); err != errContinuation {
		t.Errorf("continued last line: %v", err)
	}
	if _, err := assemble([]byte("auth required pam_unix.so\x00\n")); err != errNUL {
		t.Errorf("NUL: %v", err)
	}
}

func TestNextToken(t *testing.T) {
	var toks, raws []string
	rest := " auth\t[success=ok  default=bad]pam_x.so [a b\\]c] [unterminated"
	for {
		tok, raw, r, ok := nextToken(rest)
		if !ok {
			break
		}
		toks, raws, rest = append(toks, tok), append(raws, raw), r
	}
	if want := []string{"auth", "success=ok  default=bad", "pam_x.so", "a b]c", "unterminated"}; !slices.Equal(toks, want) {
		t.Errorf("tokens %q, want %q", toks, want)
	}
	if want := []string{"auth", "[success=ok  default=bad]", "pam_x.so", `[a b\]c]`, "[unterminated"}; !slices.Equal(raws, want) {
		t.Errorf("raw %q, want %q", raws, want)
	}
}

func TestParseControl(t *testing.T) {
	tests := []struct {
		ctl  string
		want map[int]int // return value -> action; pamIncomplete stands for "every other"
	}{
		{"success=ok default=ignore", map[int]int{pamSuccess: actOK, pamIncomplete: actIgnore}},
		{"default=ignore success=2", map[int]int{pamSuccess: 2, pamIncomplete: actIgnore}},
		{"default=die default=ignore", map[int]int{pamSuccess: actDie, pamIncomplete: actDie}},
		{"success = done\tnew_authtok_reqd=done default=ignore", map[int]int{pamSuccess: actDone, pamNewAuthtokReqd: actDone, pamIncomplete: actIgnore}},
		{"success=okdefault=reset", map[int]int{pamSuccess: actOK, pamIncomplete: actReset}},
		{"auth_err=bad", map[int]int{pamAuthErr: actBad, pamSuccess: actBad, pamIncomplete: actBad}},
		{"", map[int]int{pamSuccess: actBad, pamIncomplete: actBad}},
		// Syntax errors make every value bad, even those set before.
		{"success=ok default=ignroe", map[int]int{pamSuccess: actBad, pamIncomplete: actBad}},
		{"success=okay default=ignore", map[int]int{pamSuccess: actBad, pamIncomplete: actBad}},
		{"success=0 default=ignore", map[int]int{pamSuccess: actBad, pamIncomplete: actBad}},
		{"succes=ok default=ignore", map[int]int{pamSuccess: actBad, pamIncomplete: actBad}},
		{"success=99999999999999999999 default=ignore", map[int]int{pamSuccess: maxJump, pamIncomplete: actIgnore}},
	}
	for _, tt := range tests {
		var a Actions
		for i := range a {
			a[i] = actUndef
		}
		parseControl(tt.ctl, &a)
		a.setDefault(actBad)
		for r := range numReturns {
			want, ok := tt.want[r]
			if !ok {
				want = tt.want[pamIncomplete]
			}
			if a[r] != want {
				t.Errorf("[%s]: %s -> %s, want %s", tt.ctl, returnNames[r], actionName(a[r]), actionName(want))
			}
		}
	}
}

func TestParseEntry(t *testing.T) {
	entries, err := Parse([]byte(`AUTH [Required] pam_a.so
auth success=done pam_b.so x [y z]
-auth optional pam_c.so
@include common-auth
auth substack system-auth
auht required pam_d.so
auth required
auth
session required pam_e.so
account include
`))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		typ  string
		kind Kind
		mod  string
		args string
		ok   int // action on success
	}
	wants := []want{
		{"auth", KindModule, "pam_a.so", "[Required]", actOK}, // brackets stripped, then a keyword
		{"auth", KindModule, "pam_b.so", "success=done x [y z]", actDone},
		{"auth", KindModule, "pam_c.so", "optional", actOK},
		{"@include", KindInclude, "common-auth", "", actUndef},
		{"auth", KindSubstack, "system-auth", "substack", actUndef},
		{"", KindMustFail, "pam_d.so", "required", actOK},
		{"auth", KindMustFail, "", "required", actOK},
		{"auth", KindMustFail, "", "", actBad},
		{"session", KindModule, "pam_e.so", "required", actOK},
		{"account", KindMustFail, "", "include", actBad},
	}
	if len(entries) != len(wants) {
		t.Fatalf("%d entries, want %d", len(entries), len(wants))
	}
	for i, w := range wants {
		e := entries[i]
		got := want{e.Type, e.Kind, e.Module, e.ControlAndArgs(), e.Actions[pamSuccess]}
		if got != w {
			t.Errorf("line %d: %+v, want %+v", e.Line, got, w)
		}
	}
	if !entries[2].Silent || entries[1].Silent {
		t.Error("silent flag")
	}
	if !slices.Equal(entries[1].Args, []string{"x", "y z"}) {
		t.Errorf("args %q", entries[1].Args)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\nauth required pam_mnguard.so socket=/run/x\n"))
	f.Add([]byte("@include common-auth\n-auth optional pam_gnome_keyring.so\n"))
	f.Add([]byte("auth substack sshd\nauth [default=reset] pam_mnguard.so\n"))
	f.Add([]byte("auth \\\n required pam_mnguard.so # c \\\n[a\\]b]\n"))
	f.Add([]byte("auth [success=3 auth_err=die default=bad] pam_mnguard.so\nauth include /etc/pam.d/common-auth\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		entries, _ := Parse(data)
		last := 0
		for _, e := range entries {
			if e.Line <= last {
				t.Fatalf("line numbers not increasing: %d after %d", e.Line, last)
			}
			last = e.Line
			if e.Kind == KindModule || e.Kind == KindMustFail {
				for r, a := range e.Actions {
					if a == actUndef || a < actReset || a > maxJump {
						t.Fatalf("line %d: %s has action %d", e.Line, returnNames[r], a)
					}
				}
			}
			if strings.ContainsAny(e.Type, " \t\n") {
				t.Fatalf("type %q", e.Type)
			}
		}
		// The whole way through: as a service including itself and common-auth.
		fsys := fstest.MapFS{
			"etc/pam.d/sshd":        {Data: data},
			"etc/pam.d/common-auth": {Data: data},
			"etc/pam.d/system-auth": {Data: []byte("auth required pam_mnguard.so\n")},
		}
		r := Evaluate(fsys, "sshd")
		if !r.Present || r.Required == (r.Reason != "") || strings.Contains(r.Reason, "\n") {
			t.Fatalf("%+v", r)
		}
	})
}
