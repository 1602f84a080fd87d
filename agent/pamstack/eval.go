package pamstack

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// Impressions, as in pam_dispatch.c.
const (
	impUndef    = 0
	impPositive = 1
	impNegative = 2
)

// maxStates bounds the search; real stacks need a few hundred states.
const maxStates = 1 << 20

// state is the dispatcher's state between two handlers. ok stands for
// status == PAM_SUCCESS; no other property of the status decides anything.
type state struct {
	imp uint8
	ok  bool
}

func (s state) bits() uint64 {
	b := uint64(s.imp)
	if s.ok {
		b |= 4
	}
	return b
}

// run is one dispatcher position: the next handler, the level of the previous one and
// the state saved at the start of each substack level (substates[]).
type run struct {
	pc   int
	prev int
	cur  state
	subs [maxLevel]state
}

type runKey struct {
	pc, prev int
	cur      uint64
	subs     uint64
}

func (r *run) key() runKey {
	var subs uint64
	for i, s := range r.subs {
		subs |= s.bits() << (3 * i)
	}
	return runKey{r.pc, r.prev, r.cur.bits(), subs}
}

// outcome is a class of return values that the dispatcher treats alike.
type outcome struct {
	ret     int // a representative return value
	act     int
	success bool // ret == PAM_SUCCESS
}

// step is one handler on a witness path, and the handlers its action skipped.
type step struct {
	pc      int
	out     outcome
	ran     bool // a module or must-fail line, not a substack marker
	skipped []int
}

// returns lists the values a handler can return in pam_authenticate.
func (h *handler) returns() []int {
	switch {
	case h.kind == KindMustFail:
		return []int{pamPermDenied} // PAM_MUST_FAIL_CODE
	case h.isMnguard():
		// Any refusal. pam_mnguard.so never returns PAM_IGNORE or
		// PAM_NEW_AUTHTOK_REQD; PAM_INCOMPLETE only pauses the stack.
		var rs []int
		for r := range numReturns {
			if r != pamSuccess && r != pamIgnore && r != pamNewAuthtokReqd && r != pamIncomplete {
				rs = append(rs, r)
			}
		}
		return rs
	case h.isDeny():
		return []int{pamAuthErr, pamModuleUnknown} // fails, or is missing
	}
	var rs []int
	for r := range numReturns {
		if r != pamIncomplete {
			rs = append(rs, r)
		}
	}
	return rs
}

// outcomes groups the handler's return values by what the dispatcher does with them.
func (h *handler) outcomes() []outcome {
	var outs []outcome
	seen := map[[2]int]bool{}
	for _, r := range h.returns() {
		o := outcome{ret: r, act: h.actions[r], success: r == pamSuccess}
		k := [2]int{o.act, 0}
		if o.success {
			k[1] = 1
		}
		if seen[k] {
			// Prefer auth_err as the example of a refusal.
			if r == pamAuthErr {
				for i := range outs {
					if outs[i].act == o.act && !outs[i].success {
						outs[i].ret = r
					}
				}
			}
			continue
		}
		seen[k] = true
		outs = append(outs, o)
	}
	return outs
}

type search struct {
	hs      []handler
	visited map[runKey]bool
	path    []step
	tooBig  bool
}

// bypass looks for a run of the stack that ends in PAM_SUCCESS while pam_mnguard.so
// refuses. It returns the witness path, or nil when there is none.
func bypass(hs []handler) ([]step, error) {
	s := &search{hs: hs, visited: map[runKey]bool{}}
	var r run // pc 0, nothing saved: impression undefined, status PAM_MUST_FAIL_CODE
	if s.dfs(r) {
		return s.path, nil
	}
	if s.tooBig {
		return nil, problemf("auth stack too complex to evaluate (more than %d states)", maxStates)
	}
	return nil, nil
}

func (s *search) dfs(r run) bool {
	if r.pc >= len(s.hs) {
		// The sanity check at the end: success needs a positive impression.
		return r.cur.imp == impPositive && r.cur.ok
	}
	k := r.key()
	if s.visited[k] {
		return false
	}
	if len(s.visited) >= maxStates {
		s.tooBig = true
		return false
	}
	s.visited[k] = true

	h := &s.hs[r.pc]
	level := h.level
	if r.prev < level {
		r.subs[level] = r.cur
	}
	if h.kind == KindSubstack {
		next := r
		next.pc, next.prev = r.pc+1, level
		s.path = append(s.path, step{pc: r.pc})
		if s.dfs(next) {
			return true
		}
		s.path = s.path[:len(s.path)-1]
		return false
	}

	for _, o := range h.outcomes() {
		next := r
		next.prev = level
		pc := r.pc // the last handler consumed
		var skipped []int
		decision := false
		switch a := o.act; {
		case a == actReset:
			next.cur = r.subs[level]
		case a == actOK || a == actDone:
			if next.cur.imp == impUndef || (next.cur.imp == impPositive && next.cur.ok) {
				next.cur = state{imp: impPositive, ok: o.success}
			}
			decision = a == actDone && next.cur.imp == impPositive
		case a == actBad || a == actDie:
			if next.cur.imp != impNegative {
				next.cur = state{imp: impNegative, ok: o.success}
			}
			decision = a == actDie
		case a == actIgnore:
		case a > 0:
			// In pam_authenticate a jump leaves impression and status alone.
			n := a
			for pc+1 < len(s.hs) && s.hs[pc+1].level >= level && n > 0 {
				for {
					pc++
					skipped = append(skipped, pc)
					if pc+1 >= len(s.hs) || s.hs[pc+1].level <= level {
						break
					}
				}
				n--
			}
			if n > 0 {
				// "bad jump in stack"
				next.cur = state{imp: impNegative}
			}
		default:
			// Not reachable: every action is set by the parser.
			next.cur = state{imp: impNegative}
		}
		if decision {
			for pc+1 < len(s.hs) && s.hs[pc+1].level >= level {
				pc++
				skipped = append(skipped, pc)
			}
		}
		next.pc = pc + 1
		s.path = append(s.path, step{pc: r.pc, out: o, ran: true, skipped: skipped})
		if s.dfs(next) {
			return true
		}
		s.path = s.path[:len(s.path)-1]
		if s.tooBig {
			return false
		}
	}
	return false
}

// Result is the verdict on one service's auth stack.
type Result struct {
	Service string
	// Present: the service has its own file in /etc/pam.d (or /usr/lib/pam.d).
	Present bool
	// Required: no run of the auth stack succeeds while pam_mnguard.so refuses.
	Required bool
	// ModuleLine is the control and arguments of the first pam_mnguard.so line in the
	// stack, e.g. "required socket=/run/mnguard/pam.sock"; empty when there is none.
	ModuleLine string
	// Socket is the socket that line asks (its last socket= argument, or the default).
	Socket string
	// Reason says in one line why the module is not required; empty when it is or
	// when the service is not present.
	Reason string
}

// Evaluate reads a service's PAM configuration from fsys, the root file system (for
// the running system os.DirFS("/")), and judges its auth stack.
func Evaluate(fsys fs.FS, service string) Result {
	res := Result{Service: service}
	hs, present, err := loadService(fsys, service)
	res.Present = present
	if !present {
		return res
	}
	if err != nil {
		res.Reason = reason(err)
		return res
	}
	first := -1
	for i := range hs {
		if hs[i].isMnguard() {
			first = i
			break
		}
	}
	if first < 0 {
		res.Reason = ModuleName + " is not in the auth stack"
		for i := range hs {
			if hs[i].missing {
				res.Reason += "; " + hs[i].describe()
				break
			}
		}
		return res
	}
	e := hs[first].entry
	res.ModuleLine = e.ControlAndArgs()
	res.Socket = DefaultSocket
	for _, a := range e.Args {
		if v, ok := strings.CutPrefix(a, "socket="); ok {
			res.Socket = v
		}
	}
	path, err := bypass(hs)
	if err != nil {
		res.Reason = reason(err)
		return res
	}
	if path == nil {
		res.Required = true
		return res
	}
	res.Reason = explain(hs, path)
	return res
}

func reason(err error) string {
	var p *problem
	if errors.As(err, &p) {
		return p.reason
	}
	return err.Error()
}

// explain turns a witness path into one line: the first thing on it that lets the
// stack succeed without the module.
func explain(hs []handler, path []step) string {
	for i, st := range path {
		h := &hs[st.pc]
		if st.ran && h.isMnguard() {
			a := st.out.act
			if a != actBad && a != actDie {
				return fmt.Sprintf("%s: a refused code (%s) is %s, not a failure",
					h.describe(), returnNames[st.out.ret], actionVerb(a))
			}
			// Refused and failed; something later must have undone it.
			for _, later := range path[i+1:] {
				if later.ran && later.out.act == actReset {
					return fmt.Sprintf("%s resets the stack on %s after %s fails",
						hs[later.pc].describe(), returnNames[later.out.ret], h.describe())
				}
			}
		}
		for _, sk := range st.skipped {
			if !hs[sk].isMnguard() {
				continue
			}
			m := &hs[sk]
			switch a := st.out.act; {
			case a > 0:
				return fmt.Sprintf("%s jumps over %s on %s", h.describe(), m.short(), returnNames[st.out.ret])
			case a == actDone:
				return fmt.Sprintf("%s ends the stack on %s before %s", h.describe(), returnNames[st.out.ret], m.short())
			default:
				return fmt.Sprintf("%s skips %s on %s", h.describe(), m.short(), returnNames[st.out.ret])
			}
		}
	}
	return "the auth stack can succeed without " + ModuleName
}

func actionVerb(act int) string {
	switch {
	case act == actIgnore:
		return "ignored"
	case act == actOK:
		return "taken as ok"
	case act == actDone:
		return "taken as done"
	case act == actReset:
		return "a reset"
	case act > 0:
		return fmt.Sprintf("a jump over %d", act)
	}
	return actionName(act)
}
