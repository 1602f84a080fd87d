package pamstack

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// PAM return values, from security/_pam_types.h.
const (
	pamSuccess        = 0
	pamPermDenied     = 6
	pamAuthErr        = 7
	pamNewAuthtokReqd = 12
	pamIgnore         = 25
	pamModuleUnknown  = 28
	pamIncomplete     = 31
	numReturns        = 32 // _PAM_RETURN_VALUES
)

// returnNames are libpam's names of the return values in control strings
// (libpam/pam_tokens.h), in its order; "default" is the last.
var returnNames = [numReturns + 1]string{
	"success", "open_err", "symbol_err", "service_err", "system_err", "buf_err",
	"perm_denied", "auth_err", "cred_insufficient", "authinfo_unavail", "user_unknown",
	"maxtries", "new_authtok_reqd", "acct_expired", "session_err", "cred_unavail",
	"cred_expired", "cred_err", "no_module_data", "conv_err", "authtok_err",
	"authtok_recover_err", "authtok_lock_busy", "authtok_disable_aging", "try_again",
	"ignore", "abort", "authtok_expired", "module_unknown", "bad_item", "conv_again",
	"incomplete", "default",
}

// Actions, as libpam encodes them: a positive value is a jump over that many modules.
const (
	actIgnore = 0
	actOK     = -1
	actDone   = -2
	actBad    = -3
	actDie    = -4
	actReset  = -5
	actUndef  = -6
)

// actionNames are indexed by -action.
var actionNames = [...]string{"ignore", "ok", "done", "bad", "die", "reset"}

// maxJump caps a parsed jump; libpam's int would overflow long before. Any jump this
// long runs off the end of every stack the loader accepts.
const maxJump = 1 << 20

// Actions maps each PAM return value to what the stack does with it.
type Actions [numReturns]int

func (a *Actions) setDefault(act int) {
	for i := range a {
		if a[i] == actUndef {
			a[i] = act
		}
	}
}

func actionName(act int) string {
	if act > 0 {
		return fmt.Sprintf("jump %d", act)
	}
	if -act < len(actionNames) {
		return actionNames[-act]
	}
	return "undefined"
}

// Kind says what a configuration line does.
type Kind int

const (
	// KindModule runs a module.
	KindModule Kind = iota
	// KindMustFail is a line libpam installs but always fails: an unknown type, no
	// control, no module path, or an include that could not be read.
	KindMustFail
	// KindInclude splices in the lines of the same type from another file
	// ("include" control, or Debian's "@include FILE" in the type column).
	KindInclude
	// KindSubstack runs another file's lines of the same type as one module.
	KindSubstack
)

// Entry is one logical line of a PAM service file, parsed as libpam parses it.
type Entry struct {
	Line    int    // the file's line number where the entry starts, from 1
	Type    string // "auth", "account", "session", "password" or "@include", lower case; "" if unknown
	RawType string // the type column as written, without a leading '-'
	Silent  bool   // a leading '-' on the type: do not log when the module is missing
	Kind    Kind
	Control string   // the control column as written, with its brackets; empty for @include
	Module  string   // module path, or the file of an include or substack
	Args    []string // module arguments as the module sees them
	Actions Actions  // for KindModule and KindMustFail

	rawArgs []string // the arguments as written
}

// ControlAndArgs returns the control and the arguments as written, e.g.
// "required socket=/run/mnguard/pam.sock".
func (e *Entry) ControlAndArgs() string {
	return strings.Join(append([]string{e.Control}, e.rawArgs...), " ")
}

// ModuleName returns the file name of the module path, e.g. "pam_unix.so".
func (e *Entry) ModuleName() string {
	if i := strings.LastIndexByte(e.Module, '/'); i >= 0 {
		return e.Module[i+1:]
	}
	return e.Module
}

// isAuth says whether the entry belongs to the auth stack. libpam files a line with
// an unknown or missing type under the requested type or, at the top, under auth
// ("most sensitive"), so such lines always count here.
func (e *Entry) isAuth() bool {
	return e.Type == "auth" || e.Type == "@include" || e.Type == ""
}

var (
	errNUL          = errors.New("NUL byte in file")
	errContinuation = errors.New("file ends inside a continued line")
)

// logicalLine is a configuration line with continuations joined and the comment cut.
type logicalLine struct {
	num  int
	text string
}

// assemble splits a file into logical lines as _pam_assemble_line does: leading blanks
// skipped, everything from the first '#' dropped, and a backslash that is the last
// non-blank character continues the line (replaced by a space) unless the physical line
// holds a '#'. libpam refuses a file that ends inside a continued line.
func assemble(data []byte) ([]logicalLine, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, errNUL
	}
	var (
		out     []logicalLine
		buf     strings.Builder
		pending bool // the previous physical line was continued
		first   int
	)
	num := 0
	for len(data) > 0 {
		num++
		var chunk string
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			chunk, data = string(data[:i+1]), data[i+1:]
		} else {
			chunk, data = string(data), nil
		}
		if !pending {
			first = num
		}
		cont := false
		p := len(chunk)
		for p > 0 {
			p--
			if c := chunk[p]; c != ' ' && c != '\t' && c != '\n' {
				break
			}
		}
		if chunk[p] == '\\' {
			chunk = chunk[:p] + " "
			cont = true
		}
		eol := !cont || strings.IndexByte(chunk, '#') >= 0
		chunk = strings.TrimLeft(chunk, " \t")
		if i := strings.IndexByte(chunk, '#'); i >= 0 {
			chunk = chunk[:i]
		}
		if !eol {
			buf.WriteString(chunk)
			pending = true
			continue
		}
		if buf.Len() > 0 || (chunk != "" && chunk[0] != '\n') {
			buf.WriteString(chunk)
		}
		if buf.Len() > 0 {
			out = append(out, logicalLine{num: first, text: buf.String()})
		}
		buf.Reset()
		pending = false
	}
	if pending {
		return out, errContinuation
	}
	return out, nil
}

func isSep(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

// nextToken returns the next field of s as _pam_StrTok with " \n\t" does: a field
// starting with '[' runs to the first ']' (with "\]" standing for ']') and loses its
// brackets. raw is the field as written. ok is false when no field is left.
func nextToken(s string) (tok, raw, rest string, ok bool) {
	i := 0
	for i < len(s) && isSep(s[i]) {
		i++
	}
	if i == len(s) {
		return "", "", "", false
	}
	if s[i] == '[' {
		var b strings.Builder
		j := i + 1
		for j < len(s) && s[j] != ']' {
			if s[j] == '\\' && j+1 < len(s) && s[j+1] == ']' {
				j++
			}
			b.WriteByte(s[j])
			j++
		}
		if j < len(s) {
			j++ // the closing ']'
		}
		return b.String(), s[i:j], s[j:], true
	}
	j := i
	for j < len(s) && !isSep(s[j]) {
		j++
	}
	tok = s[i:j]
	if j < len(s) {
		j++ // the separator
	}
	return tok, tok, s[j:], true
}

func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func trimCSpace(s string) string {
	for s != "" && isCSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// parseControl fills a from a value=action list as _pam_parse_control does, including
// its prefix matching of names and its treatment of any syntax error: every value
// becomes "bad".
func parseControl(tok string, a *Actions) {
	for {
		tok = trimCSpace(tok)
		if tok == "" {
			return
		}
		ret := -1
		for r, name := range returnNames {
			if strings.HasPrefix(tok, name) {
				ret = r
				break
			}
		}
		if ret < 0 {
			break
		}
		tok = tok[len(returnNames[ret]):]
		if tok == "" {
			break
		}
		tok = trimCSpace(tok)
		if tok == "" || tok[0] != '=' {
			break
		}
		tok = trimCSpace(tok[1:])
		if tok == "" {
			break
		}
		act, found := 0, false
		for i, name := range actionNames {
			if strings.HasPrefix(tok, name) {
				act, found = -i, true
				tok = tok[len(name):]
				break
			}
		}
		if !found {
			if tok == "" || tok[0] < '0' || tok[0] > '9' {
				break
			}
			for tok != "" && tok[0] >= '0' && tok[0] <= '9' {
				if act < maxJump {
					act = act*10 + int(tok[0]-'0')
				}
				tok = tok[1:]
			}
			if act == 0 {
				break
			}
			act = min(act, maxJump)
		}
		if ret == numReturns {
			a.setDefault(act)
		} else {
			a[ret] = act
		}
	}
	for i := range a {
		a[i] = actBad
	}
}

// simpleControl returns the actions of the four classic keywords.
func simpleControl(name string) (Actions, bool) {
	var a Actions
	for i := range a {
		a[i] = actUndef
	}
	switch strings.ToLower(name) {
	case "required":
		a[pamSuccess], a[pamNewAuthtokReqd], a[pamIgnore] = actOK, actOK, actIgnore
		a.setDefault(actBad)
	case "requisite":
		a[pamSuccess], a[pamNewAuthtokReqd], a[pamIgnore] = actOK, actOK, actIgnore
		a.setDefault(actDie)
	case "optional":
		a[pamSuccess], a[pamNewAuthtokReqd] = actOK, actOK
		a.setDefault(actIgnore)
	case "sufficient":
		a[pamSuccess], a[pamNewAuthtokReqd] = actDone, actDone
		a.setDefault(actIgnore)
	default:
		return a, false
	}
	return a, true
}

// parseEntry parses one logical line of a service file (no service column).
func parseEntry(l logicalLine) Entry {
	e := Entry{Line: l.num, Kind: KindModule}
	for i := range e.Actions {
		e.Actions[i] = actUndef
	}
	typ, _, rest, ok := nextToken(l.text)
	if !ok {
		// "empty module type": installed as auth, always fails.
		e.Kind = KindMustFail
		e.Actions.setDefault(actBad)
		return e
	}
	if strings.HasPrefix(typ, "-") {
		e.Silent = true
		typ = typ[1:]
	}
	e.RawType = typ
	switch t := strings.ToLower(typ); t {
	case "auth", "account", "session", "password":
		e.Type = t
	case "@include":
		// Debian: "@include FILE" includes FILE's lines of every type.
		e.Type = t
		e.Kind = KindInclude
		e.Module, _, _, _ = nextToken(rest)
		if e.Module == "" {
			e.Kind = KindMustFail
			e.Actions.setDefault(actBad)
		}
		return e
	default:
		e.Kind = KindMustFail // an unknown type: filed under auth, always fails
	}

	ctl, rawCtl, rest, ok := nextToken(rest)
	if !ok {
		e.Kind = KindMustFail
		e.Actions.setDefault(actBad)
		return e
	}
	e.Control = rawCtl
	include := false
	if a, simple := simpleControl(ctl); simple {
		e.Actions = a
	} else {
		switch strings.ToLower(ctl) {
		case "include":
			// libpam includes even under an unknown type (as auth).
			include, e.Kind = true, KindInclude
		case "substack":
			include, e.Kind = true, KindSubstack
		default:
			parseControl(ctl, &e.Actions)
			e.Actions.setDefault(actBad)
		}
	}

	mod, _, rest, ok := nextToken(rest)
	if !ok {
		// No module path (or no include file): the line always fails.
		e.Kind = KindMustFail
		e.Actions.setDefault(actBad)
		return e
	}
	e.Module = mod
	if include {
		return e
	}
	for {
		arg, raw, r, ok := nextToken(rest)
		if !ok {
			break
		}
		e.Args = append(e.Args, arg)
		e.rawArgs = append(e.rawArgs, raw)
		rest = r
	}
	return e
}

// Parse parses the text of a PAM service file (the /etc/pam.d format, without a
// service column) into its entries, in order. It returns the entries read before an
// error; libpam refuses a file with the errors it reports.
func Parse(data []byte) ([]Entry, error) {
	lines, err := assemble(data)
	entries := make([]Entry, 0, len(lines))
	for _, l := range lines {
		entries = append(entries, parseEntry(l))
	}
	return entries, err
}
