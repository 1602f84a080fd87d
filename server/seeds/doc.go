// Package seeds reads hardware-token seed files: CSV and PSKC (RFC 6030).
//
// Both readers return every seed of a file or none: any bad row or key
// package fails the whole import, and every returned [Seed] has passed
// [Seed.Validate]. Error messages name the line, column or key package that
// failed and never contain a secret.
//
// The readers do not bound the size of their input: callers wrap the reader
// with [io.LimitReader] (a few MiB is plenty for 100,000 tokens).
package seeds
