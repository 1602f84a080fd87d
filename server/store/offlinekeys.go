package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// KeySealer seals the terminals' offline keys at rest, each bound to its
// terminal ID: a sealed key copied to another terminal's row does not open.
// The collector's is AES-256-GCM under the data directory's key.
type KeySealer interface {
	SealOfflineKey(terminalID string, key []byte) ([]byte, error)
	OpenOfflineKey(terminalID string, sealed []byte) ([]byte, error)
}

var (
	// ErrNoKeySealer: the store was opened without the key that seals
	// offline keys (SetKeySealer was not called), so it neither stores nor
	// opens one.
	ErrNoKeySealer = errors.New("no key to seal offline keys with: the collector sets it from its data directory's totp.key")
	// ErrKeySealer: a stored offline key does not open with the key given,
	// which is not the one it was sealed under.
	ErrKeySealer = errors.New("offline key does not open: it was sealed under another key (is totp.key the data directory's own?)")
)

// SetKeySealer gives the store the sealer of offline keys. It first checks
// that k opens a key already sealed (ErrKeySealer otherwise, and k is not
// taken), then seals every offline key still stored in plain text (rows
// written before migration 0005), all in one transaction, and returns how
// many it sealed. Calling it again seals nothing more.
func (s *DB) SetKeySealer(ctx context.Context, k KeySealer) (int, error) {
	n, err := s.setKeySealer(ctx, k)
	if err != nil {
		return 0, fmt.Errorf("store: seal offline keys: %w", err)
	}
	return n, nil
}

func (s *DB) setKeySealer(ctx context.Context, k KeySealer) (int, error) {
	if k == nil {
		return 0, errors.New("sealer is nil")
	}
	var n int
	err := s.write(ctx, func(tx wtx) error {
		n = 0
		var (
			id     string
			sealed []byte
		)
		err := tx.queryRow(ctx, `SELECT id, offline_key FROM terminals
	WHERE offline_key IS NOT NULL AND offline_key_sealed = 1 ORDER BY id LIMIT 1`).Scan(&id, &sealed)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			if _, err := k.OpenOfflineKey(id, sealed); err != nil {
				return fmt.Errorf("terminal %s: %w", id, ErrKeySealer)
			}
		}
		rows, err := tx.tx.QueryContext(ctx, `SELECT id, offline_key FROM terminals
	WHERE offline_key IS NOT NULL AND offline_key_sealed = 0 ORDER BY id`)
		if err != nil {
			return err
		}
		type plain struct {
			id  string
			key []byte
		}
		var todo []plain
		for rows.Next() {
			var p plain
			if err := rows.Scan(&p.id, &p.key); err != nil {
				rows.Close()
				return err
			}
			todo = append(todo, p)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		for _, p := range todo {
			sealed, err := k.SealOfflineKey(p.id, p.key)
			if err != nil {
				return fmt.Errorf("seal offline key of terminal %s: %w", p.id, err)
			}
			if _, err := tx.exec(ctx, `UPDATE terminals SET offline_key = $2, offline_key_sealed = 1
	WHERE id = $1 AND offline_key_sealed = 0`, p.id, sealed); err != nil {
				return fmt.Errorf("store sealed offline key of terminal %s: %w", p.id, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.keys.Store(&k)
	return n, nil
}

// keySealer returns the sealer, ErrNoKeySealer if none was set.
func (s *DB) keySealer() (KeySealer, error) {
	k := s.keys.Load()
	if k == nil {
		return nil, ErrNoKeySealer
	}
	return *k, nil
}

// sealOfflineKey seals the key of a terminal to insert; nil stays nil.
func (s *DB) sealOfflineKey(id string, key []byte) ([]byte, error) {
	if key == nil {
		return nil, nil
	}
	k, err := s.keySealer()
	if err != nil {
		return nil, err
	}
	sealed, err := k.SealOfflineKey(id, key)
	if err != nil {
		return nil, fmt.Errorf("seal offline key: %w", err)
	}
	return sealed, nil
}

// OfflineKey implements Store.
func (s *DB) OfflineKey(ctx context.Context, id string) ([]byte, error) {
	key, err := s.offlineKey(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("store: offline key of terminal %s: %w", id, err)
	}
	return key, nil
}

func (s *DB) offlineKey(ctx context.Context, id string) ([]byte, error) {
	var (
		stored []byte
		sealed bool
	)
	err := s.r.QueryRowContext(ctx, `SELECT offline_key, offline_key_sealed FROM terminals WHERE id = $1`, id).
		Scan(&stored, &sealed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("terminal %w", ErrNotFound)
	case err != nil:
		return nil, err
	case stored == nil:
		return nil, fmt.Errorf("no offline key: %w", ErrNotFound)
	}
	k, err := s.keySealer()
	if err != nil {
		return nil, err
	}
	if !sealed {
		// SetKeySealer seals every plain row before it sets k, and rows
		// are written sealed: a plain one now was written behind the
		// collector's back.
		return nil, errors.New("offline key is stored in plain text: reopen the store to seal it")
	}
	key, err := k.OpenOfflineKey(id, stored)
	if err != nil {
		return nil, ErrKeySealer
	}
	return key, nil
}
