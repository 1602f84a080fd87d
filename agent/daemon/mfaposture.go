package daemon

import (
	"io/fs"
	"os"
	"path/filepath"
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
	return pamstack.PostureFS(pamFS(cfg.PamDir), cfg.Services, cfg.Socket, serving)
}

// pamFS returns the file system pamstack reads, whose root stands for "/":
// for a dir ending in etc/pam.d, the directory above etc ("/" for
// /etc/pam.d, so /usr/lib/pam.d and absolute includes are read too);
// otherwise a file system holding only dir, as etc/pam.d.
func pamFS(dir string) fs.FS {
	dir = filepath.Clean(dir)
	if filepath.Base(dir) == "pam.d" && filepath.Base(filepath.Dir(dir)) == "etc" {
		return os.DirFS(filepath.Dir(filepath.Dir(dir)))
	}
	return pamDirFS{os.DirFS(dir)}
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
