// Package logins is the collector's TOTP authority: it enrolls login users,
// keeps their secrets sealed at rest, verifies their codes for terminals with
// replay protection, delays and lockout, and issues offline login codes.
//
// Secrets are sealed with AES-256-GCM under a key kept in a file of the data
// directory (see [CreateKey] and [LoadKey]); the store only ever holds sealed
// secrets and SHA-256 hashes of recovery codes.
//
// Codes, secrets and recovery codes never appear in errors, log lines or
// events. What [Service.Verify] tells the person at the terminal is in
// [Result.Message]; why, for the log, is in [Result.Reason].
package logins
