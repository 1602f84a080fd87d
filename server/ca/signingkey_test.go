package ca

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/pki"
)

func TestLoadOrCreateSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "signing.key")
	key, created, err := LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("not created")
	}
	again, created, err := LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if created || !key.Equal(again) {
		t.Errorf("reload: created %v, same key %v", created, key.Equal(again))
	}

	// A key of another type is refused.
	ec, _ := pki.NewKey()
	data, _ := pki.MarshalKeyPEM(ec)
	other := filepath.Join(t.TempDir(), "ec.key")
	if err := pki.WriteFileAtomic(other, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSigningKey(other); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Errorf("ECDSA signing key: %v", err)
	}

	if runtime.GOOS == "windows" {
		return
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSigningKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("world-readable signing key: %v", err)
	}
}
