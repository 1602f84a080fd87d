package logins

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mnguard/mnguard/internal/pki"
)

// KeySize is the size of the secret-sealing key: AES-256.
const KeySize = 32

// sealVersion is the first byte of every sealed secret: version 1 is
// AES-256-GCM with a random 12-byte nonce, then ciphertext and tag.
const sealVersion = 1

// aadPrefix binds a sealed secret to its purpose and, with the user name
// appended, to its user: a secret copied to another user's row fails to
// open.
const aadPrefix = "mnguard totp secret\x00"

// CreateKey writes a new random key to path with mode 0600. It fails if
// path exists: a key is never replaced, since every sealed secret depends
// on it.
func CreateKey(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("create TOTP key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create TOTP key: %w", err)
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create TOTP key %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// LoadKey reads the key at path. It refuses a file readable by group or
// others, and one that is not exactly [KeySize] bytes. A missing file
// returns an error wrapping io/fs.ErrNotExist.
func LoadKey(path string) ([]byte, error) {
	if err := pki.CheckPrivateFileMode(path); err != nil {
		return nil, fmt.Errorf("TOTP key: %w", err)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TOTP key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("TOTP key %s: %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}

// Sealer seals and opens TOTP secrets under the key, each bound to the name
// it is sealed for. The operators of the console use it too, with names
// that no login user can have ("operator:NAME").
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a Sealer under key ([KeySize] bytes).
func NewSealer(key []byte) (*Sealer, error) { return newSealer(key) }

func newSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("TOTP key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

func aad(user string) []byte {
	return append([]byte{sealVersion}, aadPrefix+user...)
}

// Seal encrypts secret for user.
func (s *Sealer) Seal(user string, secret []byte) ([]byte, error) { return s.seal(user, secret) }

// Open decrypts a secret sealed for user.
func (s *Sealer) Open(user string, sealed []byte) ([]byte, error) { return s.open(user, sealed) }

// seal encrypts secret for user.
func (s *Sealer) seal(user string, secret []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(secret)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal secret: %w", err)
	}
	return s.aead.Seal(out, out[1:1+ns], secret, aad(user)), nil
}

// open decrypts a secret sealed for user.
func (s *Sealer) open(user string, sealed []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() {
		return nil, fmt.Errorf("sealed secret of user %s: %d bytes, too short", user, len(sealed))
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("sealed secret of user %s: unknown version %d", user, sealed[0])
	}
	secret, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad(user))
	if err != nil {
		return nil, fmt.Errorf("sealed secret of user %s does not open: sealed under another TOTP key or for another user", user)
	}
	return secret, nil
}

// offlineAADPrefix binds a sealed offline key to its purpose and, with the
// terminal ID appended, to its terminal.
const offlineAADPrefix = "mnguard offline key\x00"

// SealOfflineKey encrypts a terminal's offline key (store.KeySealer).
func (s *Sealer) SealOfflineKey(terminalID string, key []byte) ([]byte, error) {
	return s.sealAAD(append([]byte{sealVersion}, offlineAADPrefix+terminalID...), key)
}

// OpenOfflineKey decrypts an offline key sealed for the terminal
// (store.KeySealer).
func (s *Sealer) OpenOfflineKey(terminalID string, sealed []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("sealed offline key of terminal %s: not a sealed key", terminalID)
	}
	key, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], append([]byte{sealVersion}, offlineAADPrefix+terminalID...))
	if err != nil {
		return nil, fmt.Errorf("sealed offline key of terminal %s does not open: sealed under another key or for another terminal", terminalID)
	}
	return key, nil
}

// sealAAD encrypts b with additional data ad.
func (s *Sealer) sealAAD(ad, b []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(b)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return s.aead.Seal(out, out[1:1+ns], b, ad), nil
}
