package csvsafe

import "testing"

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"pc-a":              "pc-a",
		"=1+1":              "'=1+1",
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")",
		"+81":               "'+81",
		"-2":                "'-2",
		"@SUM(A1)":          "'@SUM(A1)",
		"\tx":               "'\tx",
		"\rx":               "'\rx",
		"2026-04-01":        "2026-04-01",
		"a=b":               "a=b",
	} {
		if got := Cell(in); got != want {
			t.Errorf("Cell(%q) = %q, want %q", in, got, want)
		}
	}
}
