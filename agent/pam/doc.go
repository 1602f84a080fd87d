// Package pam builds and tests pam_mnguard.so, the C PAM client of the agent's socket.
//
// The module itself is pam_mnguard.c (see its header for arguments, protocol
// and the sshd settings it needs); the Makefile builds it into bin/. The tests
// (Linux, root, cc, libpam0g-dev and pamtester) compile it, stack it in a
// throw-away /etc/pam.d service and drive it with pamtester against a scripted
// socket peer that speaks the agent's protocol.
package pam
