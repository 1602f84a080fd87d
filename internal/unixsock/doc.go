// Package unixsock holds what the agent's local sockets (the PAM login gate
// and the exemption control socket) share on Linux: listening on a path
// that may hold a stale socket of an earlier run, the peer's credentials,
// and the accept loop with its connection limits (by peer uid, so that no
// local user can take root's slots) and back-off.
package unixsock
