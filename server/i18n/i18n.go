// Package i18n is the collector's message catalogue: every text the web
// console and the reports show, in Japanese (the default) and English,
// looked up by key.
//
// Messages live in messages/LANG/*.json, flat objects of key to text. A
// text takes arguments as fmt verbs with explicit indexes ("%[1]s"), so
// that a translation may put them in another order.
package i18n

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Languages the catalogue holds; the first is the default.
var Languages = []string{"ja", "en"}

// Default is the language used when nothing else says.
const Default = "ja"

//go:embed messages
var files embed.FS

var (
	loadOnce sync.Once
	catalog  map[string]map[string]string
	loadErr  error
)

// load reads every messages/LANG/*.json once.
func load() (map[string]map[string]string, error) {
	loadOnce.Do(func() { catalog, loadErr = parse(files) })
	return catalog, loadErr
}

func parse(fsys fs.FS) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, lang := range Languages {
		m := map[string]string{}
		names, err := fs.Glob(fsys, path.Join("messages", lang, "*.json"))
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, name := range names {
			b, err := fs.ReadFile(fsys, name)
			if err != nil {
				return nil, err
			}
			var part map[string]string
			if err := json.Unmarshal(b, &part); err != nil {
				return nil, fmt.Errorf("i18n: %s: %w", name, err)
			}
			for k, v := range part {
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("i18n: %s: key %q is defined twice for %s", name, k, lang)
				}
				m[k] = v
			}
		}
		out[lang] = m
	}
	return out, nil
}

// Check reports whether the embedded catalogue loads and every language
// has the same keys with the same argument verbs.
func Check() error {
	c, err := load()
	if err != nil {
		return err
	}
	base := c[Default]
	for _, lang := range Languages {
		for k, v := range c[lang] {
			b, ok := base[k]
			if !ok {
				return fmt.Errorf("i18n: key %q is in %s but not in %s", k, lang, Default)
			}
			if !slices.Equal(verbs(v), verbs(b)) {
				return fmt.Errorf("i18n: key %q takes %v in %s but %v in %s", k, verbs(v), lang, verbs(b), Default)
			}
		}
		for k := range base {
			if _, ok := c[lang][k]; !ok {
				return fmt.Errorf("i18n: key %q is in %s but not in %s", k, Default, lang)
			}
		}
	}
	return nil
}

// verbs returns the sorted, distinct argument indexes a text uses; a verb
// without an explicit index counts as -1.
func verbs(s string) []int {
	var out []int
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			i++
			continue
		}
		n := -1
		if j := strings.IndexByte(s[i:], ']'); i+1 < len(s) && s[i+1] == '[' && j > 0 {
			if v, err := strconv.Atoi(s[i+2 : i+j]); err == nil {
				n = v
			}
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Supported reports whether lang is a language of the catalogue.
func Supported(lang string) bool { return slices.Contains(Languages, lang) }

// Has reports whether the catalogue has key.
func Has(key string) bool {
	c, err := load()
	if err != nil {
		return false
	}
	_, ok := c[Default][key]
	return ok
}

// Keys returns every key, sorted.
func Keys() []string {
	c, _ := load()
	out := make([]string, 0, len(c[Default]))
	for k := range c[Default] {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// T returns the text of key in lang (the default language for an unknown
// one) with args. An unknown key returns the key itself, so a missing
// message shows rather than vanishes (a test keeps the catalogue
// complete).
func T(lang, key string, args ...any) string {
	c, err := load()
	if err != nil {
		return key
	}
	m, ok := c[lang]
	if !ok {
		m = c[Default]
	}
	s, ok := m[key]
	if !ok {
		return key
	}
	if len(args) == 0 {
		return s
	}
	return fmt.Sprintf(s, args...)
}

// TS is T with string arguments, as check details store them.
func TS(lang, key string, args []string) string {
	as := make([]any, len(args))
	for i, a := range args {
		as[i] = a
	}
	return T(lang, key, as...)
}

// Match picks the language of an Accept-Language header: the supported
// language with the highest weight, or Default.
func Match(acceptLanguage string) string {
	best, bestQ := Default, -1.0
	for _, part := range strings.Split(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				continue
			}
			q = f
		}
		base, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if Supported(base) && q > bestQ && q > 0 {
			best, bestQ = base, q
		}
	}
	return best
}
