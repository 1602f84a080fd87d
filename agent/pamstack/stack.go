package pamstack

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// ModuleName is the file name of the module the stacks must require.
const ModuleName = "pam_mnguard.so"

// DefaultSocket is pam_mnguard.so's socket when the line has no socket= argument.
const DefaultSocket = "/run/mnguard/pam.sock"

// Limits. maxLevel is libpam's PAM_SUBSTACK_MAX_LEVEL: an include or substack nested
// this deep fails to load. The others bound what a hostile or broken file costs us.
const (
	maxLevel    = 16
	maxHandlers = 4096
	maxFileSize = 1 << 20
)

// configDirs are where libpam looks for a relative service or include name, in order.
var configDirs = []string{"etc/pam.d", "usr/lib/pam.d"}

// handler is one line of the flattened auth stack, as libpam's struct handler.
type handler struct {
	kind    Kind // KindModule, KindMustFail or KindSubstack (the substack's own marker)
	level   int  // substack depth
	actions Actions
	entry   *Entry
	file    string // where the entry is, for messages
	missing bool   // a KindMustFail that stands for an include that was not found
}

func (h *handler) isMnguard() bool {
	return h.kind == KindModule && h.entry.ModuleName() == ModuleName
}

func (h *handler) isDeny() bool {
	return h.kind == KindModule && h.entry.ModuleName() == "pam_deny.so"
}

// where names the handler's line, e.g. "common-auth:17".
func (h *handler) where() string {
	return fmt.Sprintf("%s:%d", h.file, h.entry.Line)
}

// describe shows the line, e.g. "sufficient pam_unix.so (common-auth:17)".
func (h *handler) describe() string {
	e := h.entry
	switch {
	case h.missing:
		if e.Type == "@include" {
			return fmt.Sprintf("@include %s (%s, file missing)", e.Module, h.where())
		}
		return fmt.Sprintf("%s %s (%s, file missing)", e.Control, e.Module, h.where())
	case e.Control == "":
		return fmt.Sprintf("%q (%s)", e.RawType, h.where())
	case e.Module == "":
		return fmt.Sprintf("%s (%s)", e.Control, h.where())
	}
	return fmt.Sprintf("%s %s (%s)", e.Control, e.ModuleName(), h.where())
}

// short shows the module and where it is, e.g. "pam_mnguard.so (common-auth:25)".
func (h *handler) short() string {
	return fmt.Sprintf("%s (%s)", h.entry.ModuleName(), h.where())
}

// problem is a reason the stack cannot be judged; the service then counts as not
// requiring the module.
type problem struct{ reason string }

func (p *problem) Error() string { return p.reason }

func problemf(format string, args ...any) error {
	return &problem{fmt.Sprintf(format, args...)}
}

var errNotFound = errors.New("not found")

type loader struct {
	fsys     fs.FS
	handlers []handler
	chain    []string // files being loaded, outermost first
}

// lookup returns the fs path of a service or include name the way libpam opens it:
// an absolute path as is, else the first of /etc/pam.d and /usr/lib/pam.d that has it.
func (l *loader) lookup(name string) (string, error) {
	var cands []string
	if strings.HasPrefix(name, "/") {
		cands = []string{fsPath(name)}
	} else {
		for _, d := range configDirs {
			cands = append(cands, fsPath("/"+d+"/"+name))
		}
	}
	for _, p := range cands {
		_, err := fs.Stat(l.fsys, p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", problemf("%s: %v", display(p), unwrapPath(err))
		}
	}
	return "", errNotFound
}

// fsPath turns an absolute file name into a path in the root file system.
func fsPath(name string) string {
	p := strings.TrimPrefix(path.Clean(name), "/")
	if p == "" {
		return "."
	}
	return p
}

// display names a file in messages: services and includes in /etc/pam.d by their
// name, anything else by its absolute path.
func display(p string) string {
	if rest, ok := strings.CutPrefix(p, "etc/pam.d/"); ok {
		return rest
	}
	return "/" + p
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (l *loader) read(p string) ([]byte, error) {
	f, err := l.fsys.Open(p)
	if err != nil {
		return nil, problemf("read %s: %v", display(p), unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, problemf("read %s: %v", display(p), unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, problemf("read %s: not a regular file", display(p))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, problemf("read %s: %v", display(p), unwrapPath(err))
	}
	if len(data) > maxFileSize {
		return nil, problemf("read %s: larger than %d bytes", display(p), maxFileSize)
	}
	return data, nil
}

// load appends the auth lines of the named file at the given substack level; depth
// counts the includes above it. It returns errNotFound when libpam would not find the
// file, and a *problem when the stack cannot be judged.
func (l *loader) load(name string, level, depth int) error {
	p, err := l.lookup(name)
	if err != nil {
		return err
	}
	if slices.Contains(l.chain, p) {
		loop := make([]string, 0, len(l.chain)+1)
		for _, c := range l.chain[slices.Index(l.chain, p):] {
			loop = append(loop, display(c))
		}
		return problemf("include loop: %s → %s", strings.Join(loop, " → "), display(p))
	}
	if depth >= maxLevel {
		return problemf("includes nested deeper than %d levels at %s", maxLevel, display(p))
	}
	data, err := l.read(p)
	if err != nil {
		return err
	}
	entries, err := Parse(data)
	if err != nil {
		return problemf("%s: %v", display(p), err)
	}
	l.chain = append(l.chain, p)
	defer func() { l.chain = l.chain[:len(l.chain)-1] }()

	file := display(p)
	for i := range entries {
		e := &entries[i]
		if !e.isAuth() {
			continue
		}
		switch e.Kind {
		case KindInclude, KindSubstack:
			sub := 0
			if e.Kind == KindSubstack {
				l.handlers = append(l.handlers, handler{kind: KindSubstack, level: level, entry: e, file: file})
				sub = 1
			}
			err := l.load(e.Module, level+sub, depth+1)
			if errors.Is(err, errNotFound) {
				// libpam: "unable to open config", the line then always fails.
				h := handler{kind: KindMustFail, level: level, entry: e, file: file, missing: true}
				for j := range h.actions {
					h.actions[j] = actBad
				}
				l.handlers = append(l.handlers, h)
			} else if err != nil {
				return err
			}
		default:
			l.handlers = append(l.handlers, handler{kind: e.Kind, level: level, actions: e.Actions, entry: e, file: file})
		}
		if len(l.handlers) > maxHandlers {
			return problemf("auth stack longer than %d lines", maxHandlers)
		}
	}
	return nil
}

// loadService builds the auth stack of a service: its own file, or /etc/pam.d/other
// when the service's file has no auth lines. present says whether the service's file
// exists.
func loadService(fsys fs.FS, service string) (handlers []handler, present bool, err error) {
	if service == "" || strings.ContainsAny(service, "/\x00") || service == "." || service == ".." {
		return nil, false, problemf("invalid service name %q", service)
	}
	l := &loader{fsys: fsys}
	err = l.load(service, 0, 0)
	if errors.Is(err, errNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if len(l.handlers) == 0 && service != "other" {
		// libpam runs "other"'s auth stack for a service without one.
		err = l.load("other", 0, 0)
		if err != nil && !errors.Is(err, errNotFound) {
			return nil, true, err
		}
	}
	return l.handlers, true, nil
}
