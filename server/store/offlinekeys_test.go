package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/offlinecode"
)

// testSealer is AES-256-GCM with the terminal ID as additional data, as
// the collector's (package logins, which the store cannot import).
type testSealer struct{ aead cipher.AEAD }

func newTestSealer(tb testing.TB, seed byte) *testSealer {
	key := bytes.Repeat([]byte{seed}, 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		tb.Fatal(err)
	}
	return &testSealer{aead}
}

func (k *testSealer) SealOfflineKey(id string, key []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, key, []byte(id)), nil
}

func (k *testSealer) OpenOfflineKey(id string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns {
		return nil, errors.New("too short")
	}
	return k.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(id))
}

// rawOfflineKey reads terminals.offline_key straight from the database
// file (or PostgreSQL database), as someone with a copy of it would.
func rawOfflineKey(t *testing.T, path, id string) []byte {
	t.Helper()
	driver := "sqlite"
	if strings.HasPrefix(path, "postgres://") {
		driver = "pgx"
	}
	db, err := sql.Open(driver, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b []byte
	if err := db.QueryRow(`SELECT offline_key FROM terminals WHERE id = $1`, id).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fileHolds reports whether the database file or its WAL contain b;
// false for a PostgreSQL database (rawOfflineKey reads what it holds).
func fileHolds(t *testing.T, path string, b []byte) bool {
	t.Helper()
	if strings.HasPrefix(path, "postgres://") {
		return false
	}
	for _, p := range []string{path, path + "-wal"} {
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

var offlineKey = []byte("offline-key:0123456789abcdef0123")

func TestOfflineKeySealedAtRest(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	h := createToken(t, s, "tok", 2, t0.Add(1e12))
	term, cert := newTerminal("t1", "pc-01")
	term.OfflineKey = offlineKey
	if err := s.Enroll(ctx, h, t0, term, cert); err != nil {
		t.Fatal(err)
	}
	raw := rawOfflineKey(t, path, "t1")
	if len(raw) == 0 || bytes.Contains(raw, offlineKey) {
		t.Errorf("offline_key in the database file is %q: the key in plain text", raw)
	}
	if fileHolds(t, path, offlineKey) {
		t.Error("the database file holds the offline key in plain text")
	}
	if got, err := s.OfflineKey(ctx, "t1"); err != nil || !bytes.Equal(got, offlineKey) {
		t.Errorf("OfflineKey = %q, %v; want the key", got, err)
	}
	if got, err := s.Terminal(ctx, "t1"); err != nil || got.OfflineKey != nil {
		t.Errorf("Terminal carries offline key %q (%v)", got.OfflineKey, err)
	}
	// A sealed key moved to another terminal's row does not open there.
	term2, cert2 := newTerminal("t2", "pc-02")
	term2.OfflineKey = []byte("another-key-0123456789abcdef0123")
	if err := s.Enroll(ctx, h, t0, term2, cert2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE terminals SET offline_key = $1 WHERE id = 't2'`, raw); err != nil {
		t.Fatal(err)
	}
	if got, err := s.OfflineKey(ctx, "t2"); !errors.Is(err, ErrKeySealer) {
		t.Errorf("t1's sealed key in t2's row: OfflineKey = %q, %v; want ErrKeySealer", got, err)
	}
	if _, err := s.OfflineKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OfflineKey(unknown) = %v, want ErrNotFound", err)
	}
}

// TestOfflineKeyCopiedDatabase: a copy of the database without the key
// gives no offline key, and with another key neither.
func TestOfflineKeyCopiedDatabase(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	s, path := openTest(t)
	h := createToken(t, s, "tok", 1, t0.Add(1e12))
	term, cert := newTerminal("t1", "pc-01")
	term.OfflineKey = offlineKey
	if err := s.Enroll(ctx, h, t0, term, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.OfflineKey(ctx, "t1"); !errors.Is(err, ErrNoKeySealer) || got != nil {
		t.Errorf("copy without key: OfflineKey = %q, %v; want ErrNoKeySealer", got, err)
	}
	if _, err := c.SetKeySealer(ctx, newTestSealer(t, 2)); !errors.Is(err, ErrKeySealer) {
		t.Errorf("copy with another key: SetKeySealer = %v, want ErrKeySealer", err)
	}
	if got, err := c.OfflineKey(ctx, "t1"); err == nil {
		t.Errorf("copy with another key: OfflineKey = %q", got)
	}
	// Without the key nothing new is stored in plain text either.
	h2 := createToken(t, c, "tok2", 1, t0.Add(1e12))
	term2, cert2 := newTerminal("t2", "pc-02")
	term2.OfflineKey = offlineKey
	if err := c.Enroll(ctx, h2, t0, term2, cert2); !errors.Is(err, ErrNoKeySealer) {
		t.Errorf("Enroll without key = %v, want ErrNoKeySealer", err)
	}
}

// TestOfflineKeyMigration: a database of schema 0004 with a key in plain
// text is sealed at open with the key, once, and gives the same offline
// codes as before.
func TestOfflineKeyMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := sql.Open("sqlite", path+"?_foreign_keys=1")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	var upTo4 []migration
	for _, m := range ms {
		if m.version <= 4 {
			upTo4 = append(upTo4, m)
		}
	}
	if err := migrate(ctx, old, upTo4); err != nil {
		t.Fatal(err)
	}
	ids := []string{"t1", "t2", "t3"}
	for i, id := range ids {
		if _, err := old.ExecContext(ctx, `INSERT INTO terminals (id, hostname, state, enrolled_at, offline_key)
	VALUES ($1, $2, 'active', 1, $3)`, id, "pc-"+id, append([]byte(nil), fmt.Sprintf("%s-plain-key-%02d-0123456789abcdef", id, i)...)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.ExecContext(ctx, `INSERT INTO terminals (id, hostname, state, enrolled_at, offline_key) VALUES ('t0', 'nokey', 'active', 1, NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	plain := map[string][]byte{}
	codes := map[string]string{}
	w := offlinecode.WindowOf(t0)
	for _, id := range ids {
		plain[id] = rawOfflineKey(t, path, id)
		c, err := offlinecode.LoginCode(plain[id], id, "yamada", "12345678", w)
		if err != nil {
			t.Fatal(err)
		}
		codes[id] = c
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.OfflineKey(ctx, "t1"); !errors.Is(err, ErrNoKeySealer) {
		t.Errorf("before SetKeySealer: OfflineKey = %v, want ErrNoKeySealer", err)
	}
	k := newTestSealer(t, 1)
	n, err := s.SetKeySealer(ctx, k)
	if err != nil || n != len(ids) {
		t.Fatalf("SetKeySealer = %d, %v; want %d sealed", n, err, len(ids))
	}
	if n, err := s.SetKeySealer(ctx, k); err != nil || n != 0 {
		t.Errorf("SetKeySealer again = %d, %v; want 0 sealed", n, err)
	}
	if s.Dialect() == DialectSQLite {
		if _, err := s.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if raw := rawOfflineKey(t, path, id); bytes.Equal(raw, plain[id]) {
			t.Errorf("%s: still in plain text after the migration", id)
		}
		key, err := s.OfflineKey(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		c, err := offlinecode.LoginCode(key, id, "yamada", "12345678", w)
		if err != nil || c != codes[id] {
			t.Errorf("%s: offline code %q (%v) after the migration, %q before", id, c, err, codes[id])
		}
	}
	if _, err := s.OfflineKey(ctx, "t0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("terminal without key: OfflineKey = %v, want ErrNotFound", err)
	}
}

// TestOfflineKeyMigrationAllOrNothing: a sealer that fails on one row
// leaves every row as it was.
func TestOfflineKeyMigrationAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	for _, id := range []string{"a", "b"} {
		if _, err := s.w.ExecContext(ctx, `INSERT INTO terminals (id, hostname, state, enrolled_at, offline_key, offline_key_sealed)
	VALUES ($1, $1, 'active', 1, $2, 0)`, id, []byte("plain-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetKeySealer(ctx, failingSealer{newTestSealer(t, 1), "b"}); err == nil {
		t.Fatal("SetKeySealer with a failing sealer succeeded")
	}
	for _, id := range []string{"a", "b"} {
		if raw := rawOfflineKey(t, path, id); string(raw) != "plain-"+id {
			t.Errorf("%s: %q after a failed migration, want it unchanged", id, raw)
		}
	}
}

type failingSealer struct {
	*testSealer
	bad string
}

func (f failingSealer) SealOfflineKey(id string, key []byte) ([]byte, error) {
	if id == f.bad {
		return nil, errors.New("no")
	}
	return f.testSealer.SealOfflineKey(id, key)
}
