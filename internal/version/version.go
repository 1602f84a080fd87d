// Package version says which mnguard release a binary is.
package version

// Version is set at build time with
// -ldflags "-X github.com/mnguard/mnguard/internal/version.Version=v1.2.3".
var Version = "0.1.0-dev"
