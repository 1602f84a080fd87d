//go:build !linux

package mfa

import (
	"errors"
	"testing"
)

func TestServeUnsupported(t *testing.T) {
	if err := (&Server{}).Serve(t.Context()); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Serve: %v, want ErrUnsupported", err)
	}
}
