// Package e2e tests mnguard end to end: real collector and agent processes,
// built from this tree, talking mutual TLS on loopback. It needs root only
// where a test says so, and a C compiler with libusb for the agent's cgo
// build (make deps installs them).
package e2e
