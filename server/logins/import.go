package logins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mnguard/mnguard/server/seeds"
	"github.com/mnguard/mnguard/server/store"
)

// Seed file formats for [Service.Import].
const (
	FormatAuto = "auto" // or ""
	FormatCSV  = "csv"
	FormatPSKC = "pskc"
)

// ImportRequest is a hardware-token seed file to import.
type ImportRequest struct {
	Data []byte
	// Format is FormatCSV, FormatPSKC, or FormatAuto/"" to detect it: XML
	// is PSKC, anything else CSV.
	Format string
	// Key is the pre-shared key of an encrypted PSKC file; Password the
	// password of a PBKDF2-protected one. At most one of them.
	Key      []byte
	Password string
	// Replace gives users that exist already the imported token (pending
	// again); without it an existing user fails the whole import.
	Replace bool
	// Actor is recorded as the creator.
	Actor string
}

// Import adds a user per seed of a CSV or PSKC file, pending until the
// first valid code, with source "imported" and the token's serial. Every
// seed must name a valid user, once; SHA-1, SHA-256 and SHA-512 tokens of
// 6 or 8 digits are accepted. All or nothing: any bad seed, or (without
// Replace) any existing user, imports none. Errors wrap [ErrInvalid],
// [ErrUserExists] or a store error, and name the token or user, never a
// secret.
func (s *Service) Import(ctx context.Context, req ImportRequest) ([]store.User, error) {
	if len(req.Data) == 0 {
		return nil, fmt.Errorf("%w: seed file is empty", ErrInvalid)
	}
	if len(req.Key) > 0 && req.Password != "" {
		return nil, fmt.Errorf("%w: give a PSKC key or a password, not both", ErrInvalid)
	}
	format := req.Format
	switch format {
	case "", FormatAuto:
		format = FormatCSV
		if t := bytes.TrimLeft(bytes.TrimPrefix(req.Data, []byte("\xef\xbb\xbf")), " \t\r\n"); len(t) > 0 && t[0] == '<' {
			format = FormatPSKC
		}
	case FormatCSV, FormatPSKC:
	default:
		return nil, fmt.Errorf("%w: format %q: want csv, pskc or auto", ErrInvalid, truncate(format))
	}
	var list []seeds.Seed
	var err error
	switch {
	case format == FormatCSV && (len(req.Key) > 0 || req.Password != ""):
		return nil, fmt.Errorf("%w: a key or password is only for PSKC files, and this is CSV", ErrInvalid)
	case format == FormatCSV:
		list, err = seeds.ReadCSV(ctx, bytes.NewReader(req.Data))
	case req.Password != "":
		list, err = seeds.ReadPSKCPassword(ctx, bytes.NewReader(req.Data), req.Password)
	default:
		list, err = seeds.ReadPSKC(ctx, bytes.NewReader(req.Data), req.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s seed file: %v", ErrInvalid, format, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: %s seed file holds no tokens", ErrInvalid, format)
	}
	now := s.p.Now()
	users := make([]store.User, 0, len(list))
	seen := make(map[string]string, len(list))
	for _, sd := range list {
		if sd.User == "" {
			return nil, fmt.Errorf("%w: token %q names no user: add the user to the file (PSKC UserId, CSV user column)", ErrInvalid, truncate(sd.Serial))
		}
		if err := ValidateName(sd.User); err != nil {
			return nil, fmt.Errorf("token %q: %w", truncate(sd.Serial), err)
		}
		if other, dup := seen[sd.User]; dup {
			return nil, fmt.Errorf("%w: user %s has two tokens in the file (%q and %q)", ErrInvalid, sd.User, truncate(other), truncate(sd.Serial))
		}
		seen[sd.User] = sd.Serial
		sealed, err := s.seal.seal(sd.User, sd.Secret)
		if err != nil {
			return nil, err
		}
		u := store.User{
			Name: sd.User, State: store.UserPending, SecretSealed: sealed,
			Algorithm: sd.Algorithm, Digits: sd.Digits, Period: sd.Period,
			Source: store.SourceImported, TokenSerial: sd.Serial, CreatedAt: now, CreatedBy: req.Actor,
		}
		if _, err := params(u); err != nil {
			return nil, fmt.Errorf("%w: token %q: %v", ErrInvalid, truncate(sd.Serial), err)
		}
		users = append(users, u)
	}
	if err := s.st.ImportUsers(ctx, users, req.Replace); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, s.existing(ctx, users, err)
		}
		return nil, fmt.Errorf("import users: %w", err)
	}
	out := make([]store.User, 0, len(users))
	for _, u := range users {
		nu, err := s.user(ctx, u.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, nu)
	}
	return out, nil
}

// existing names the users of an import that exist already.
func (s *Service) existing(ctx context.Context, users []store.User, err error) error {
	var names []string
	for _, u := range users {
		if _, uerr := s.st.User(ctx, u.Name); uerr == nil {
			names = append(names, u.Name)
		}
	}
	switch {
	case len(names) == 0:
		return fmt.Errorf("%w: %v", ErrUserExists, err)
	case len(names) > 5:
		names = append(names[:5], fmt.Sprintf("and %d more", len(names)-5))
	}
	return fmt.Errorf("%w: %s; nothing was imported (import with replace to give them the new tokens)", ErrUserExists, strings.Join(names, ", "))
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
