//go:build !linux

package e2e

import (
	"errors"
	"testing"
)

// driftRemount needs Linux device nodes and mount(2).
func driftRemount(*testing.T, string, ...string) error {
	return errors.New("driftRemount: Linux only")
}
