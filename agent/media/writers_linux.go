//go:build linux

package media

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// fsRef identifies the files of one filesystem: by st_dev, and by path
// below its mount points for filesystems whose files have other device
// numbers than the superblock (btrfs subvolumes).
type fsRef struct {
	devs     map[uint64]bool
	prefixes []string
}

func (f fsRef) under(path string) bool {
	for _, p := range f.prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// holder is a process that keeps a filesystem from going read-only.
type holder struct {
	pid  int
	comm string
	// what it does there, for the action: "writing /media/x/f".
	what string
	path string // the file or directory, the action's target
	// fdPath is ProcDir/PID/fd/N when an open file is the reason, so that
	// the process can be checked again just before it is signalled.
	fdPath   string
	dev, ino uint64
}

// findHolders lists the processes that keep the filesystem ref from being
// remounted read-only: those with a file there open for writing, holding
// an unlinked file open (the kernel will not remount read-only while an
// orphan inode awaits deletion), or with a shared writable mapping of a
// file there. With all, also every process with any file, working
// directory or root directory there. One entry per process.
func (e *Enforcer) findHolders(ref fsRef, all bool) []holder {
	proc := e.procDir()
	ents, err := os.ReadDir(proc)
	if err != nil {
		e.log().Warn("cannot list processes", "dir", proc, "err", err)
		return nil
	}
	var hs []holder
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid <= 0 {
			continue
		}
		pdir := filepath.Join(proc, ent.Name())
		h, ok := fdHolder(pdir, ref, all)
		if !ok {
			h, ok = mapHolder(pdir, ref, all)
		}
		if !ok && all {
			h, ok = dirHolder(pdir, ref)
		}
		if !ok {
			continue
		}
		h.pid = pid
		h.comm = readComm(pdir)
		hs = append(hs, h)
	}
	return hs
}

func fdHolder(pdir string, ref fsRef, all bool) (holder, bool) {
	fdDir := filepath.Join(pdir, "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return holder{}, false
	}
	for _, ent := range ents {
		p := filepath.Join(fdDir, ent.Name())
		link, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(link, "/") {
			continue // pipes, sockets, anonymous inodes
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			continue
		}
		if !ref.devs[st.Dev] && !ref.under(link) {
			continue
		}
		flags, err := fdFlags(filepath.Join(pdir, "fdinfo", ent.Name()))
		if err != nil {
			continue
		}
		path := strings.TrimSuffix(link, " (deleted)")
		h := holder{fdPath: p, dev: st.Dev, ino: st.Ino, path: path}
		switch acc := flags & unix.O_ACCMODE; {
		case acc == unix.O_WRONLY || acc == unix.O_RDWR:
			h.what = "writing " + path
		case st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG:
			h.what = "holding deleted " + path
		case all:
			h.what = "using " + path
		default:
			continue
		}
		return h, true
	}
	return holder{}, false
}

// fdFlags reads the octal "flags:" line of /proc/PID/fdinfo/N.
func fdFlags(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("flags:")); ok {
			f, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 8, 64)
			return int(f), err
		}
	}
	return 0, errors.New("no flags in fdinfo")
}

// mapHolder finds a shared writable mapping of a file on the filesystem
// (it keeps a writable open file alive after its descriptor is closed);
// with all, any mapping there.
func mapHolder(pdir string, ref fsRef, all bool) (holder, bool) {
	f, err := os.Open(filepath.Join(pdir, "maps"))
	if err != nil {
		return holder{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || len(fields[1]) < 4 {
			continue
		}
		maj, min, ok := strings.Cut(fields[3], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 16, 32)
		mi, err2 := strconv.ParseUint(min, 16, 32)
		if err1 != nil || err2 != nil || !ref.devs[unix.Mkdev(uint32(ma), uint32(mi))] {
			continue
		}
		perms := fields[1]
		path := strings.Join(fields[5:], " ")
		switch {
		case perms[1] == 'w' && perms[3] == 's':
			return holder{what: "mapping " + path + " writable", path: path}, true
		case all:
			return holder{what: "mapping " + path, path: path}, true
		}
	}
	return holder{}, false
}

// dirHolder finds a working or root directory on the filesystem.
func dirHolder(pdir string, ref fsRef) (holder, bool) {
	for _, d := range []string{"cwd", "root"} {
		p := filepath.Join(pdir, d)
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || !ref.devs[st.Dev] {
			continue
		}
		link, _ := os.Readlink(p)
		return holder{what: "in " + link, path: link, fdPath: p, dev: st.Dev, ino: st.Ino}, true
	}
	return holder{}, false
}

func readComm(pdir string) string {
	b, err := os.ReadFile(filepath.Join(pdir, "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// still reports whether the holder still holds what it was found holding,
// so that a recycled PID is never signalled.
func (h holder) still() bool {
	if h.fdPath == "" {
		return true
	}
	var st unix.Stat_t
	return unix.Stat(h.fdPath, &st) == nil && st.Dev == h.dev && st.Ino == h.ino
}

// victim is a holder being ended, through a pidfd where the kernel has
// them (5.3), so that a signal cannot reach a recycled PID.
type victim struct {
	holder
	pidfd  int
	exited bool
	killed bool
}

// end ends the holders: SIGTERM, up to the grace period to exit (cut short
// when ctx ends), then SIGKILL. PID 1 and the agent itself are never
// signalled. Each process is an action.
func (r *enforceRun) end(hs []holder) {
	self := os.Getpid()
	var vs []*victim
	for _, h := range hs {
		what := fmt.Sprintf("ended pid %d (%s) %s", h.pid, h.comm, h.what)
		if h.pid == 1 || h.pid == self {
			r.act(what, h.path, fmt.Errorf("pid %d is not ended", h.pid))
			continue
		}
		v := &victim{holder: h, pidfd: -1}
		fd, err := unix.PidfdOpen(h.pid, 0)
		switch {
		case errors.Is(err, unix.ESRCH):
			continue // gone already
		case err == nil:
			v.pidfd = fd
		case !errors.Is(err, unix.ENOSYS):
			r.act(what, h.path, err)
			continue
		}
		if !h.still() {
			v.close()
			continue
		}
		if err := v.signal(unix.SIGTERM); err != nil {
			if !errors.Is(err, unix.ESRCH) {
				r.act(what, h.path, err)
			}
			v.close()
			continue
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return
	}
	r.wait(vs, r.e.grace(), true)
	for _, v := range vs {
		if !v.exited {
			v.killed = v.signal(unix.SIGKILL) == nil
		}
	}
	r.wait(vs, killWait, false)
	for _, v := range vs {
		what := fmt.Sprintf("ended pid %d (%s) %s", v.pid, v.comm, v.what)
		if v.killed {
			what += fmt.Sprintf(" (SIGKILL after %s)", r.e.grace())
		}
		var err error
		if !v.exited {
			err = errors.New("still running after SIGKILL")
		}
		r.act(what, v.path, err)
		v.close()
	}
}

func (v *victim) signal(sig unix.Signal) error {
	if v.pidfd >= 0 {
		return unix.PidfdSendSignal(v.pidfd, sig, nil, 0)
	}
	return unix.Kill(v.pid, sig)
}

func (v *victim) close() {
	if v.pidfd >= 0 {
		unix.Close(v.pidfd)
		v.pidfd = -1
	}
}

// wait waits up to d for the victims to exit; with interruptible, the end
// of the run's context cuts the wait short.
func (r *enforceRun) wait(vs []*victim, d time.Duration, interruptible bool) {
	const step = 20 * time.Millisecond
	deadline := r.e.now().Add(d)
	// Bounded by count as well, in case Now is a clock that stands still
	// (each exit can end a sleep early).
	for i := 0; i <= int(d/step)+len(vs)+1; i++ {
		pending := r.poll(vs)
		if pending == 0 {
			return
		}
		left := deadline.Sub(r.e.now())
		if left <= 0 {
			return
		}
		if interruptible && r.ctx.Err() != nil {
			return
		}
		r.sleep(vs, min(left, step))
	}
}

// poll marks the victims that have exited and counts the others.
func (r *enforceRun) poll(vs []*victim) int {
	pending := 0
	for _, v := range vs {
		if v.exited {
			continue
		}
		if v.pidfd >= 0 {
			// A pidfd turns readable when the process has exited (its
			// files are closed by then, even if it is not reaped yet).
			pfd := []unix.PollFd{{Fd: int32(v.pidfd), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 0); err == nil && n > 0 {
				v.exited = true
			}
		} else {
			v.exited = exitedPID(filepath.Join(r.e.procDir(), strconv.Itoa(v.pid)))
		}
		if !v.exited {
			pending++
		}
	}
	return pending
}

// sleep waits for d or for a victim to exit, whichever comes first.
func (r *enforceRun) sleep(vs []*victim, d time.Duration) {
	var pfds []unix.PollFd
	for _, v := range vs {
		if !v.exited && v.pidfd >= 0 {
			pfds = append(pfds, unix.PollFd{Fd: int32(v.pidfd), Events: unix.POLLIN})
		}
	}
	if len(pfds) == 0 {
		time.Sleep(d)
		return
	}
	unix.Poll(pfds, int(d/time.Millisecond)+1)
}

// exitedPID reports whether a process is gone or a zombie, without a pidfd.
func exitedPID(pdir string) bool {
	b, err := os.ReadFile(filepath.Join(pdir, "stat"))
	if err != nil {
		return true
	}
	// pid (comm) S ...: comm can hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}
