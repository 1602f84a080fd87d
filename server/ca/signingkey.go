package ca

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mnguard/mnguard/internal/pki"
)

// LoadOrCreateSigningKey loads the Ed25519 key that signs exemptions from
// path (PKCS#8 PEM) or, if the file does not exist, creates one there with
// mode 0600. The bool reports whether the key was created. On Unix a key
// file readable by group or others is refused.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, bool, error) {
	key, err := loadSigningKey(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("ca: load signing key: %w", err)
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("ca: create signing key: %w", err)
	}
	data, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, false, fmt.Errorf("ca: create signing key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("ca: create signing key: %w", err)
	}
	if err := pki.WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, false, fmt.Errorf("ca: create signing key: %w", err)
	}
	return key, true, nil
}

func loadSigningKey(path string) (ed25519.PrivateKey, error) {
	if err := pki.CheckPrivateFileMode(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	signer, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := signer.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: signing key is %T, want Ed25519", path, signer)
	}
	return key, nil
}
