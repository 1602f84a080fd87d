package media

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Mount is one line of /proc/<pid>/mountinfo (proc_pid_mountinfo(5)), with
// the kernel's octal escapes (\040 for a space, \011, \012, \134) decoded.
type Mount struct {
	ID, ParentID int
	// Major and Minor are the st_dev of files on the filesystem: the block
	// device for disk filesystems, an anonymous 0:N for btrfs, FUSE and
	// pseudo filesystems.
	Major, Minor uint32
	// Root is the directory of the filesystem mounted here ("/" unless a
	// bind mount of a subdirectory).
	Root       string
	MountPoint string
	// Options are the per-mount options, e.g. "rw", "nosuid", "relatime".
	Options []string
	FSType  string // e.g. "ext4", "vfat", "fuse.sshfs"
	// Source is the filesystem's source, e.g. "/dev/sdb1", "none".
	Source string
	// SuperOptions are the superblock's options, e.g. "rw", "errors=remount-ro".
	SuperOptions []string
}

// ReadOnly reports whether writes through this mount fail: the mount or its
// superblock is read-only.
func (m Mount) ReadOnly() bool {
	return slices.Contains(m.Options, "ro") || slices.Contains(m.SuperOptions, "ro")
}

// superReadOnly reports whether the superblock itself is read-only, so that
// no mount of it, in any namespace, can write.
func (m Mount) superReadOnly() bool { return slices.Contains(m.SuperOptions, "ro") }

// maxMountinfoLine bounds one line; the kernel's longest (overlayfs with
// many layers) stay far below it.
const maxMountinfoLine = 1 << 20

// ParseMountinfo parses the format of /proc/<pid>/mountinfo. A malformed
// line is an error that names it; an empty input is no mounts.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	br := bufio.NewReader(r)
	var mounts []Mount
	for n := 1; ; n++ {
		line, err := readMountinfoLine(br)
		if err == io.EOF && line == "" {
			return mounts, nil
		}
		if err != nil && err != io.EOF {
			return mounts, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		if strings.TrimSpace(line) != "" {
			m, perr := parseMountinfoLine(line)
			if perr != nil {
				return mounts, fmt.Errorf("mountinfo line %d: %w", n, perr)
			}
			mounts = append(mounts, m)
		}
		if err == io.EOF {
			return mounts, nil
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readMountinfoLine returns the next line without its newline, or io.EOF with the
// last unterminated line.
func readMountinfoLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(b)+len(chunk) > maxMountinfoLine {
			return "", errLineTooLong
		}
		b = append(b, chunk...)
		switch {
		case err == nil:
			return string(b[:len(b)-1]), nil
		case err == bufio.ErrBufferFull:
			continue
		default:
			return string(b), err
		}
	}
}

func parseMountinfoLine(line string) (Mount, error) {
	line = strings.TrimRight(line, "\r")
	// Fields are separated by single spaces; the source can be empty, so
	// empty fields are kept.
	f := strings.Split(line, " ")
	if len(f) < 8 {
		return Mount{}, fmt.Errorf("%d fields, want at least 8", len(f))
	}
	sep := slices.Index(f[6:], "-")
	if sep < 0 {
		return Mount{}, errors.New(`no " - " separator`)
	}
	sep += 6
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mount ID %q: %w", f[0], errors.Unwrap(err))
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parent ID %q: %w", f[1], errors.Unwrap(err))
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("device %q: want major:minor", f[2])
	}
	major, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return Mount{}, fmt.Errorf("device %q: %w", f[2], errors.Unwrap(err))
	}
	minor, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return Mount{}, fmt.Errorf("device %q: %w", f[2], errors.Unwrap(err))
	}
	m.Major, m.Minor = uint32(major), uint32(minor)
	m.Root = unescapeMountinfo(f[3])
	m.MountPoint = unescapeMountinfo(f[4])
	m.Options = splitOptions(f[5])
	// f[6:sep] are the optional fields (shared:N, master:N, ...).
	rest := f[sep+1:]
	if len(rest) == 0 || rest[0] == "" {
		return Mount{}, errors.New("no filesystem type")
	}
	m.FSType = unescapeMountinfo(rest[0])
	if len(rest) > 1 {
		m.Source = unescapeMountinfo(rest[1])
	}
	if len(rest) > 2 {
		// Anything after is part of the super options (they should not
		// hold a raw space, but never drop what the kernel said).
		m.SuperOptions = splitOptions(strings.Join(rest[2:], " "))
	}
	return m, nil
}

// splitOptions splits a comma-separated option list, decoding each option
// after the split so that an escaped comma (\054) stays inside its option.
func splitOptions(s string) []string {
	if s == "" {
		return nil
	}
	opts := strings.Split(s, ",")
	for i, o := range opts {
		opts[i] = unescapeMountinfo(o)
	}
	return opts
}

// unescapeMountinfo decodes the kernel's \ooo octal escapes; a backslash
// not followed by three octal digits is kept as is.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
