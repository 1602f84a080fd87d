// Package totp verifies RFC 6238 time-based one-time passwords the way
// mnguard's collector needs: a learned clock offset, no replay, and no
// timing leaks.
//
// The package is pure logic: it keeps no state and reads no clock. The
// server passes the current time in and keeps each user's [State] (last
// accepted time step and learned clock offset) in its database, updating it
// with compare-and-set after a successful [Verify] or [Resync].
//
// Codes and secrets never appear in errors returned by this package.
package totp
