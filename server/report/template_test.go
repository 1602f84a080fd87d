package report

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template/parse"
	"unicode"

	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
)

// textAttrRE matches attributes whose values people read.
var textAttrRE = regexp.MustCompile(`(?i)\s(title|alt|aria-label|aria-description|placeholder|summary|label|content)\s*=`)

// markup follows the template's text nodes in document order, telling the
// markup (tags, which may span an action: lang="{{.Language}}") from the
// text between tags.
type markup struct {
	inTag bool
	tag   strings.Builder
}

// text takes the next text node and returns its text outside tags and the
// tags it completed.
func (m *markup) text(s string) (outside string, tags []string) {
	var out strings.Builder
	for _, r := range s {
		switch {
		case m.inTag && r == '>':
			m.inTag = false
			tags = append(tags, m.tag.String()+">")
			m.tag.Reset()
		case m.inTag:
			m.tag.WriteRune(r)
		case r == '<':
			m.inTag = true
			m.tag.WriteRune(r)
		default:
			out.WriteRune(r)
		}
	}
	return out.String(), tags
}

// problems returns what is wrong with a text node: letters outside tags,
// entities, literal attributes people read, scripts.
func (m *markup) problems(s string) []string {
	var out []string
	rest, tags := m.text(s)
	if strings.IndexFunc(rest, unicode.IsLetter) >= 0 {
		out = append(out, fmt.Sprintf("literal text %q: every text comes through t", strings.TrimSpace(rest)))
	}
	if strings.Contains(rest, "&") {
		out = append(out, fmt.Sprintf("an entity in %q", strings.TrimSpace(rest)))
	}
	for _, tag := range tags {
		if textAttrRE.MatchString(tag) {
			out = append(out, fmt.Sprintf("literal attribute in %s: give it through t", tag))
		}
		if strings.HasPrefix(strings.ToLower(tag), "<script") {
			out = append(out, "a script")
		}
	}
	return out
}

// keyProblem returns what is wrong with a string constant in an action:
// only the key argument of t may be one, and it must be in the catalogue.
func keyProblem(cmd *parse.CommandNode, i int, s *parse.StringNode) string {
	id, isT := cmd.Args[0].(*parse.IdentifierNode)
	switch {
	case !isT || id.Ident != "t" || i != 1:
		return fmt.Sprintf("string %s outside a t key", s.Quoted)
	case !strings.HasPrefix(s.Text, "report.") || !i18n.Has(s.Text):
		return fmt.Sprintf("key %q is not in the catalogue", s.Text)
	}
	return ""
}

// walk calls fn for every node under n.
func walk(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	fn(n)
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, fn)
		}
	case *parse.IfNode:
		walk(n.Pipe, fn)
		walk(n.List, fn)
		walk(n.ElseList, fn)
	case *parse.RangeNode:
		walk(n.Pipe, fn)
		walk(n.List, fn)
		walk(n.ElseList, fn)
	case *parse.WithNode:
		walk(n.Pipe, fn)
		walk(n.List, fn)
		walk(n.ElseList, fn)
	case *parse.ActionNode:
		walk(n.Pipe, fn)
	case *parse.TemplateNode:
		walk(n.Pipe, fn)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			walk(c, fn)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			walk(a, fn)
		}
	}
}

// TestTemplateTextFromCatalogue walks the template's parse tree: its own
// text (outside tags) has no letters, no attribute people read is
// literal, and every string in an action is a catalogue key given to t.
// Whatever the report says is in the catalogue, in both languages.
func TestTemplateTextFromCatalogue(t *testing.T) {
	tmpl, err := parseTemplate("ja")
	if err != nil {
		t.Fatal(err)
	}
	texts, keys := 0, 0
	for _, tm := range tmpl.Templates() {
		if tm.Tree == nil {
			continue
		}
		var m markup
		walk(tm.Tree.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.TextNode:
				texts++
				for _, p := range m.problems(string(n.Text)) {
					t.Errorf("template %s: %s", tm.Name(), p)
				}
			case *parse.CommandNode:
				for i, a := range n.Args {
					if s, ok := a.(*parse.StringNode); ok {
						keys++
						if p := keyProblem(n, i, s); p != "" {
							t.Errorf("template %s: %s", tm.Name(), p)
						}
					}
				}
			}
		})
	}
	if texts < 50 || keys < 100 {
		t.Errorf("walked %d text nodes and %d keys: the walk missed the template", texts, keys)
	}
}

// TestTemplateWalkCatchesLiterals proves that the walk above finds
// literal text, literal attributes and strings that are not keys.
func TestTemplateWalkCatchesLiterals(t *testing.T) {
	for _, src := range []string{
		`<p>Period</p>`,
		`<td>{{if .}}期間{{end}}</td>`,
		`<p>&nbsp;</p>`,
		`<img alt="logo">`,
		`<td title="{{.X}}">`,
		`<script>{{.}}</script>`,
		`{{"literal"}}`,
		`{{printf "%s" .}}`,
		`{{t "report.no.such.key"}}`,
	} {
		tmpl, err := parseTemplate("ja")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmpl.New("probe").Parse(src); err != nil {
			t.Fatal(err)
		}
		var (
			m        markup
			problems []string
		)
		walk(tmpl.Lookup("probe").Tree.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.TextNode:
				problems = append(problems, m.problems(string(n.Text))...)
			case *parse.CommandNode:
				for i, a := range n.Args {
					if s, ok := a.(*parse.StringNode); ok {
						if p := keyProblem(n, i, s); p != "" {
							problems = append(problems, p)
						}
					}
				}
			}
		})
		if len(problems) == 0 {
			t.Errorf("%s passed the walk", src)
		}
	}
	// And what the template does is fine.
	var m markup
	for _, ok := range []string{`<html lang="`, `">`, "\n<tr><th scope=\"row\">", "</td></tr>\n"} {
		if p := m.problems(ok); len(p) > 0 {
			t.Errorf("%q: %v", ok, p)
		}
	}
}

// TestCatalogue checks the message catalogue as a whole and the keys this
// package uses: in the Go source (whole keys; a key ending in '.' is a
// prefix) and the names the prefixes are completed with.
func TestCatalogue(t *testing.T) {
	if err := i18n.Check(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range store.Checks {
		keys = append(keys, "report.check."+c)
	}
	for _, r := range []string{store.RoleAdmin, store.RoleHelpdesk, store.RoleAuditor} {
		keys = append(keys, "report.role."+r)
	}
	for _, s := range []string{store.ExemptionOnline, store.ExemptionOffline} {
		keys = append(keys, "report.source."+s)
	}
	for _, s := range []string{store.StateActive, store.StateRevoked} {
		keys = append(keys, "report.state."+s)
	}
	for _, n := range []string{"title", "first_day", "last_day", "from", "to", "time_zone", "generated_at", "complete", "collector_version", "language"} {
		keys = append(keys, "report.csv.meta."+n)
	}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || !strings.HasPrefix(s, "report.") || strings.HasSuffix(s, ".") {
				return true
			}
			found++
			keys = append(keys, s)
			return true
		})
	}
	if found < 20 {
		t.Errorf("found %d keys in the source: the scan missed them", found)
	}
	for _, k := range keys {
		if !i18n.Has(k) {
			t.Errorf("key %q is not in the catalogue", k)
		}
	}
	// No report text is empty in any language.
	for _, k := range i18n.Keys() {
		for _, lang := range i18n.Languages {
			if strings.HasPrefix(k, "report.") && strings.TrimSpace(i18n.T(lang, k)) == "" {
				t.Errorf("key %q has no %s text", k, lang)
			}
		}
	}
}

// TestJapaneseText spot-checks the wording of the Japanese report.
func TestJapaneseText(t *testing.T) {
	for key, want := range map[string]string{
		"report.title":            "自己点検報告書",
		"report.meta.period":      "対象期間",
		"report.check.media":      "取り外し可能媒体の書込み禁止",
		"report.check.network":    "他の領域との通信遮断",
		"report.mfa.title":        "多要素認証",
		"report.audit.broken":     "破損（BROKEN）",
		"report.role.auditor":     "監査担当者",
		"report.exemptions.title": "書込み許可（例外）の発行",
	} {
		if got := i18n.T("ja", key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
}
