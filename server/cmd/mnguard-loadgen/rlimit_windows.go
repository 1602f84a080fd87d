//go:build windows

package main

// raiseFileLimit: Windows has no per-process limit of open sockets to raise.
func raiseFileLimit() uint64 { return 0 }
