// Package unixsock holds what the agent's local sockets (the PAM login gate
// and the exemption control socket) share on Linux: listening on a path
// that may hold a stale socket of an earlier run, and the peer's
// credentials.
package unixsock
