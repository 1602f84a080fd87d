package bus

import (
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Origin: "a1", Kind: Exemptions, Terminal: "0b6f3a52-8a1e-4f0e-9d3c-2a1b4c5d6e7f"},
		{Origin: "a1", Kind: Policy},
		{Origin: "a1", Kind: Revoked, Terminal: "0b6f3a52-8a1e-4f0e-9d3c-2a1b4c5d6e7f"},
		{Origin: "a1", Kind: Retired, Terminal: "t1", Serials: []string{"1f", "ABCDEF0123"}},
		{Origin: "a1", Kind: Exemptions, Terminal: "t1", Seq: 7},
		{Origin: "b2", Kind: Sent, Terminal: "t1", Seq: 7, To: "a1"},
	} {
		p, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", m, err)
		}
		got, err := Decode(p)
		if err != nil {
			t.Fatalf("Decode(%s): %v", p, err)
		}
		if got.key() != m.key() || got.Origin != m.Origin {
			t.Errorf("Decode(Encode(%+v)) = %+v", m, got)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct{ name, payload, want string }{
		{"empty", ``, "decode"},
		{"not json", `exemptions`, "decode"},
		{"unknown field", `{"o":"a","k":"policy","x":1}`, "unknown field"},
		{"trailing", `{"o":"a","k":"policy"}{}`, "trailing"},
		{"no origin", `{"k":"policy"}`, "origin"},
		{"unknown kind", `{"o":"a","k":"drop"}`, "unknown kind"},
		{"no terminal", `{"o":"a","k":"exemptions"}`, "terminal"},
		{"policy with terminal", `{"o":"a","k":"policy","t":"x"}`, "names no terminal"},
		{"terminal with quote", `{"o":"a","k":"revoked","t":"x'; DROP"}`, "unexpected character"},
		{"long terminal", `{"o":"a","k":"revoked","t":"` + strings.Repeat("a", 65) + `"}`, "want 1 to 64"},
		{"serials on exemptions", `{"o":"a","k":"exemptions","t":"x","s":["1"]}`, "serials only"},
		{"retired without serials", `{"o":"a","k":"retired","t":"x"}`, "0 serials"},
		{"serial not hex", `{"o":"a","k":"retired","t":"x","s":["xyz"]}`, "unexpected character"},
		{"too big", strings.Repeat(" ", maxPayload+1), "at most"},
		{"sent without seq", `{"o":"a","k":"sent","t":"x","to":"b"}`, "needs the seq"},
		{"sent to nobody", `{"o":"a","k":"sent","t":"x","n":3}`, "needs the seq"},
		{"to on exemptions", `{"o":"a","k":"exemptions","t":"x","to":"b"}`, "only sent"},
		{"seq on policy", `{"o":"a","k":"policy","n":1}`, "a seq goes with"},
		{"bad to", `{"o":"a","k":"sent","t":"x","n":1,"to":"b c"}`, "unexpected character"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.payload)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode(%q) = %v, want an error with %q", c.payload, err, c.want)
			}
		})
	}
}

func TestEncodeRefusesTooMany(t *testing.T) {
	m := Message{Origin: "a", Kind: Retired, Terminal: "t", Serials: make([]string, maxSerials+1)}
	for i := range m.Serials {
		m.Serials[i] = "ab"
	}
	if _, err := m.Encode(); err == nil {
		t.Fatal("Encode of too many serials: no error")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"o":"a1","k":"exemptions","t":"0b6f3a52-8a1e-4f0e-9d3c-2a1b4c5d6e7f"}`)
	f.Add(`{"o":"a1","k":"policy"}`)
	f.Add(`{"o":"a1","k":"retired","t":"t1","s":["1f","ab"]}`)
	f.Add(`{"o":"a1","k":"revoked","t":"t"} `)
	f.Add(`{"o":"b2","k":"sent","t":"t1","n":7,"to":"a1"}`)
	f.Fuzz(func(t *testing.T, payload string) {
		m, err := Decode(payload)
		if err != nil {
			return
		}
		// What decodes re-encodes, to the same message.
		p, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		m2, err := Decode(p)
		if err != nil || m2.key() != m.key() || m2.Origin != m.Origin {
			t.Fatalf("round trip of %+v: %+v, %v", m, m2, err)
		}
	})
}
