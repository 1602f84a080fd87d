// Package unixsock holds what the agent's local sockets (the PAM login gate
// and the exemption control socket) share on Linux: listening on a path
// that may hold a stale socket of an earlier run, the peer's credentials,
// and the accept loop with its connection limit and back-off.
package unixsock
