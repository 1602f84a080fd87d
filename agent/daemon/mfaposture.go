package daemon

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/pamstack"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// MFAPosture says whether logins on this terminal really need the second
// factor: whether the auth stacks of the configured PAM services, read
// from cfg.PamDir, require pam_mnguard asking cfg.Socket, and whether the
// agent serves that socket. 'mnguard-agent status' shows it too.
func MFAPosture(cfg config.MFA, serving bool) *mnguardv1.MfaPosture {
	p, _ := mfaPostureFiles(cfg, serving)
	return p
}

// mfaPostureFiles is MFAPosture and the files it looked at or for (absolute
// paths): a change to any of them may change the answer.
func mfaPostureFiles(cfg config.MFA, serving bool) (*mnguardv1.MfaPosture, []string) {
	fsys, real := pamFS(cfg.PamDir)
	rec := &recordFS{FS: fsys}
	p := pamstack.PostureFS(rec, cfg.Services, cfg.Socket, serving)
	files := make([]string, 0, len(rec.names))
	for _, n := range rec.names {
		if f := real(n); f != "" && !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	return p, files
}

// recordFS notes the names opened or looked up in it.
type recordFS struct {
	fs.FS
	names []string
}

func (r *recordFS) Open(name string) (fs.File, error) {
	r.names = append(r.names, name)
	return r.FS.Open(name)
}

func (r *recordFS) Stat(name string) (fs.FileInfo, error) {
	r.names = append(r.names, name)
	return fs.Stat(r.FS, name)
}

// pamFS returns the file system pamstack reads, whose root stands for "/":
// for a dir ending in etc/pam.d, the directory above etc ("/" for
// /etc/pam.d, so /usr/lib/pam.d and absolute includes are read too);
// otherwise a file system holding only dir, as etc/pam.d. real maps a
// name in it to the file's absolute path ("" for none).
func pamFS(dir string) (fsys fs.FS, real func(name string) string) {
	dir = filepath.Clean(dir)
	if filepath.Base(dir) == "pam.d" && filepath.Base(filepath.Dir(dir)) == "etc" {
		root := filepath.Dir(filepath.Dir(dir))
		return os.DirFS(root), func(name string) string {
			if !fs.ValidPath(name) || name == "." {
				return ""
			}
			return filepath.Join(root, filepath.FromSlash(name))
		}
	}
	return pamDirFS{os.DirFS(dir)}, func(name string) string {
		rest, ok := strings.CutPrefix(name, "etc/pam.d/")
		if !ok || !fs.ValidPath(rest) {
			return ""
		}
		return filepath.Join(dir, filepath.FromSlash(rest))
	}
}

// pamDirFS shows a directory of PAM service files as etc/pam.d and nothing
// else.
type pamDirFS struct{ dir fs.FS }

func (f pamDirFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "etc/pam.d" {
		return f.dir.Open(".")
	}
	if rest, ok := strings.CutPrefix(name, "etc/pam.d/"); ok {
		return f.dir.Open(rest)
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
