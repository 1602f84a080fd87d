//go:build unix

package main

import "syscall"

// raiseFileLimit sets the soft limit of open files to the hard limit: every
// simulated terminal holds a socket. (Go's runtime does this too since 1.19;
// done here as well so the figure printed is the one in force.)
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return l.Cur
}
