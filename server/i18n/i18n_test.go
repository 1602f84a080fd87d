package i18n

import (
	"fmt"
	"strings"
	"testing"
)

func TestCatalogue(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	if got := T("ja", "no.such.key"); got != "no.such.key" {
		t.Errorf("unknown key gives %q, want the key", got)
	}
	if T("xx", "signin.title") != T(Default, "signin.title") {
		t.Error("an unknown language does not fall back to the default")
	}
}

func TestVerbs(t *testing.T) {
	for s, want := range map[string]string{
		"plain": "[]", "%[1]s and %[2]d": "[1 2]", "%[2]s before %[1]s": "[1 2]", "100%% sure": "[]", "%s": "[-1]",
	} {
		if got := fmt.Sprint(verbs(s)); got != want {
			t.Errorf("verbs(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestMatch(t *testing.T) {
	for header, want := range map[string]string{
		"":                              "ja",
		"en-US,en;q=0.9":                "en",
		"ja-JP,ja;q=0.9,en;q=0.8":       "ja",
		"fr-FR, en;q=0.5, ja;q=0.7":     "ja",
		"en;q=0":                        "ja",
		"EN-gb":                         "en",
		"de, fr":                        "ja",
		"en;q=abc, ja;q=0.1":            "ja",
		"en;q=0.3,ja;q=0.2":             "en",
		"*":                             "ja",
		strings.Repeat("en-US,", 10000): "en",
	} {
		if got := Match(header); got != want {
			t.Errorf("Match(%.40q) = %q, want %q", header, got, want)
		}
	}
}

// FuzzMatch: any Accept-Language header gives a supported language.
func FuzzMatch(f *testing.F) {
	for _, s := range []string{"", "en-US,en;q=0.9", "ja;q=0.5,en;q=0.6", ";;;,,,q=", "en;q=1e309"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := Match(s); !Supported(got) {
			t.Fatalf("Match(%q) = %q, not a supported language", s, got)
		}
	})
}
