package exemptions

import (
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // error substring; "" for ok
	}{
		{`{"op":"list"}`, ""},
		{`{"op":"challenge","device":"0781:5581:ABC123","duration_seconds":3600}`, ""},
		{`{"op":"enter","code":"abcde-fghjk"}`, ""},
		{`{"op":"challenge","device":"0781:5581:ABC123","duration_seconds":600}`, "multiple of"},
		{`{"op":"challenge","device":"sdb","duration_seconds":3600}`, "VID:PID:SERIAL"},
		{`{"op":"enter","code":"12"}`, "malformed code"},
		{`{"op":"enter","code":"ABCDE-FGHJK","device":"0781:5581:X"}`, "only a code"},
		{`{"op":"list","code":"ABCDE-FGHJK"}`, "no arguments"},
		{`{"op":"format"}`, "unknown op"},
		{`{"op":"list","extra":1}`, "unknown field"},
		{`{"op":"list"} {}`, "after the object"},
		{`[`, "request"},
		{strings.Repeat(" ", MaxRequest+1), "at most"},
	} {
		_, err := DecodeRequest([]byte(tt.in))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("DecodeRequest(%.40q) = %v", tt.in, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("DecodeRequest(%.40q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"list"}`, `{"op":"challenge","device":"0781:5581:ABC123","duration_seconds":3600}`,
		`{"op":"enter","code":"ABCDE-FGHJK"}`, `{"op":"enter","code":"ABCDE-FGHJK","code":"x"}`, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := DecodeRequest(p)
		if err != nil {
			return
		}
		switch r.Op {
		case OpList, OpChallenge, OpEnter:
		default:
			t.Fatalf("accepted op %q", r.Op)
		}
	})
}
