package logins

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/seeds"
	"github.com/mnguard/mnguard/server/store"
)

// Seed file formats for [Service.Import].
const (
	FormatAuto = "auto" // or ""
	FormatCSV  = "csv"
	FormatPSKC = "pskc"
)

// Import limits. A seed file holds at most [seeds.MaxSeeds] (100,000)
// tokens. MaxImportBytes is sized for that many in the largest format: an
// encrypted PSKC file as vendors ship them (device serial, manufacturer,
// crypto module, issuer, AES-CBC secret with an HMAC, time step, user)
// weighs 1,493 bytes a key, 149 MB for 100,000 (TestImport100000 in e2e
// measures it); 256 MiB leaves room for larger packages (an encrypted
// time step, an expiry date, a signature). A CSV of 100,000 rows is 5.6
// MB.
const (
	MaxImportBytes = 256 << 20
	// MaxAssignments bounds the serial-to-user assignments of one import.
	MaxAssignments = seeds.MaxSeeds
)

// ErrUnknownToken is returned when no unassigned token has the serial.
var ErrUnknownToken = errors.New("no unassigned token with that serial (see the list of unassigned tokens)")

// tokenSealName is the name an unassigned token's secret is sealed for:
// no user can have it (a user name has no ':').
func tokenSealName(serial string) string { return "token:" + serial }

// ImportRequest is a hardware-token seed file to import.
type ImportRequest struct {
	// File is the seed file; Data is the same as bytes (File wins). The
	// reader is read once, as the file arrives: Import never holds the
	// whole file.
	File io.Reader
	Data []byte
	// Format is FormatCSV, FormatPSKC, or FormatAuto/"" to detect it: XML
	// is PSKC, anything else CSV.
	Format string
	// Key is the pre-shared key of an encrypted PSKC file; Password the
	// password of a PBKDF2-protected one. At most one of them.
	Key      []byte
	Password string
	// Assign gives tokens (by serial) to users: for files that name no
	// user, or to override none (a token whose file names another user is
	// refused). Every serial must be in the file.
	Assign map[string]string
	// Replace gives users that exist already the imported token (pending
	// again), and replaces unassigned tokens of the same serial; without
	// it either fails the whole import.
	Replace bool
	// Op is recorded as the creator and audited ("user.import") with the
	// tokens, in their transaction.
	Op Operator
}

// ImportResult says what an import stored.
type ImportResult struct {
	// Tokens in the file; of them Assigned to users and Unassigned.
	Tokens, Assigned, Unassigned int
	// Replaced users or unassigned tokens.
	Replaced int
	// HOTP tokens among them.
	HOTP int
	// Names of the users given a token, in file order.
	Users []string
}

// Import stores the tokens of a CSV or PSKC seed file: each token the
// file (or req.Assign) gives to a user makes that user pending until the
// first valid code, with source "imported" and the token's serial; a
// token that names no user is kept unassigned (it logs nobody in) until
// [Service.Assign] gives it to one. TOTP and HOTP tokens with SHA-1,
// SHA-256 or SHA-512 and 6 or 8 digits are accepted; an expired one is
// refused. All or nothing: any bad seed or assignment, or (without
// Replace) any existing user or serial, imports none, and the audit entry
// is stored in the same transaction. Errors wrap [ErrInvalid],
// [ErrUserExists] or a store error, and name the token or user, never a
// secret.
func (s *Service) Import(ctx context.Context, req ImportRequest) (ImportResult, error) {
	list, format, err := readSeeds(ctx, req)
	if err != nil {
		return ImportResult{}, err
	}
	if len(req.Assign) > MaxAssignments {
		return ImportResult{}, fmt.Errorf("%w: %d assignments, at most %d", ErrInvalid, len(req.Assign), MaxAssignments)
	}
	now := s.p.Now()
	var in store.TokenImport
	in.Replace = req.Replace
	res := ImportResult{Tokens: len(list)}
	owner := make(map[string]string, len(list)) // user → serial
	inFile := make(map[string]bool, len(list))
	for _, sd := range list {
		inFile[sd.Serial] = true
		user := sd.User
		if a, ok := req.Assign[sd.Serial]; ok {
			if user != "" && user != a {
				return ImportResult{}, fmt.Errorf("%w: token %q: the file gives it to user %s, the assignment to %s", ErrInvalid, truncate(sd.Serial), truncate(user), truncate(a))
			}
			user = a
		}
		counter, err := checkSeed(sd, now)
		if err != nil {
			return ImportResult{}, err
		}
		if sd.Kind == seeds.HOTP {
			res.HOTP++
		}
		if user == "" {
			sealed, err := s.seal.seal(tokenSealName(sd.Serial), sd.Secret)
			if err != nil {
				return ImportResult{}, err
			}
			in.Unassigned = append(in.Unassigned, store.HardwareToken{
				Serial: sd.Serial, Kind: sd.Kind, SecretSealed: sealed, Algorithm: sd.Algorithm, Digits: sd.Digits,
				Period: sd.Period, Counter: counter, NotAfter: sd.NotAfter, CreatedAt: now, CreatedBy: req.Op.Name,
			})
			continue
		}
		if err := ValidateName(user); err != nil {
			return ImportResult{}, fmt.Errorf("token %q: %w", truncate(sd.Serial), err)
		}
		if other, dup := owner[user]; dup {
			return ImportResult{}, fmt.Errorf("%w: user %s has two tokens in the file (%q and %q)", ErrInvalid, user, truncate(other), truncate(sd.Serial))
		}
		owner[user] = sd.Serial
		sealed, err := s.seal.seal(user, sd.Secret)
		if err != nil {
			return ImportResult{}, err
		}
		in.Users = append(in.Users, store.User{
			Name: user, State: store.UserPending, SecretSealed: sealed, Kind: sd.Kind,
			Algorithm: sd.Algorithm, Digits: sd.Digits, Period: sd.Period, Counter: counter, NotAfter: sd.NotAfter,
			Source: store.SourceImported, TokenSerial: sd.Serial, CreatedAt: now, CreatedBy: req.Op.Name,
		})
		res.Users = append(res.Users, user)
	}
	for serial := range req.Assign {
		if !inFile[serial] {
			return ImportResult{}, fmt.Errorf("%w: the assignments name token %q, which is not in the %s seed file", ErrInvalid, truncate(serial), format)
		}
	}
	a := req.Op.audit(now, "user.import", fmt.Sprintf("%d tokens", len(list)), importDetail(in, req.Replace))
	sr, err := s.st.ImportTokens(ctx, in, a)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return ImportResult{}, s.existing(ctx, in.Users, err)
		}
		return ImportResult{}, fmt.Errorf("import tokens: %w", err)
	}
	res.Assigned, res.Unassigned, res.Replaced = len(in.Users), len(in.Unassigned), sr.Replaced
	return res, nil
}

// existing names the users of an import that exist already (the first
// five), or says what else exists (an unassigned token, a serial of
// another user).
func (s *Service) existing(ctx context.Context, users []store.User, err error) error {
	var names []string
	more := false
	for _, u := range users {
		if _, uerr := s.st.User(ctx, u.Name); uerr == nil {
			if len(names) == 5 {
				more = true
				break
			}
			names = append(names, u.Name)
		}
	}
	if len(names) == 0 || !strings.Contains(err.Error(), "user "+names[0]+": ") {
		return fmt.Errorf("%w: %s; nothing was imported (import with replace to give them the new tokens)", ErrUserExists, storeMessage(err))
	}
	list := strings.Join(names, ", ")
	if more {
		list += " and more"
	}
	return fmt.Errorf("%w: %s; nothing was imported (import with replace to give them the new tokens)", ErrUserExists, list)
}

// storeMessage is a store error without its "store: import tokens: "
// prefix and ErrExists suffix, for the operator.
func storeMessage(err error) string {
	m := err.Error()
	if i := strings.LastIndex(m, ": "+store.ErrExists.Error()); i >= 0 {
		m = m[:i]
	}
	return strings.TrimPrefix(m, "store: import tokens: ")
}

// importDetail is the audit detail of an import: counts and, as far as
// the audit log's detail allows, user=serial pairs and unassigned serials.
func importDetail(in store.TokenImport, replace bool) string {
	const max = 4096
	var b strings.Builder
	fmt.Fprintf(&b, "%d assigned, %d unassigned, replace=%v:", len(in.Users), len(in.Unassigned), replace)
	add := func(s string) bool {
		if b.Len()+len(s)+5 > max {
			b.WriteString(" ...")
			return false
		}
		b.WriteString(s)
		return true
	}
	for _, u := range in.Users {
		if !add(" " + u.Name + "=" + u.TokenSerial) {
			return b.String()
		}
	}
	for _, t := range in.Unassigned {
		if !add(" (unassigned)=" + t.Serial) {
			return b.String()
		}
	}
	return b.String()
}

// checkSeed refuses a seed the collector cannot use: parameters that
// verification refuses, an HOTP counter beyond what is stored, a key
// expired at now. It returns the counter as stored.
func checkSeed(sd seeds.Seed, now time.Time) (int64, error) {
	u := store.User{Name: sd.Serial, Kind: sd.Kind, Algorithm: sd.Algorithm, Digits: sd.Digits, Period: sd.Period}
	if sd.Kind != seeds.TOTP && sd.Kind != seeds.HOTP {
		return 0, fmt.Errorf("%w: token %q: kind %q is not totp or hotp", ErrInvalid, truncate(sd.Serial), truncate(sd.Kind))
	}
	if sd.Kind == seeds.TOTP {
		if _, err := params(u); err != nil {
			return 0, fmt.Errorf("%w: token %q: %v", ErrInvalid, truncate(sd.Serial), err)
		}
	} else if _, err := hotpParams(u); err != nil {
		return 0, fmt.Errorf("%w: token %q: %v", ErrInvalid, truncate(sd.Serial), err)
	}
	if sd.Counter > store.MaxCounter {
		return 0, fmt.Errorf("%w: token %q: HOTP counter %d is above %d", ErrInvalid, truncate(sd.Serial), sd.Counter, int64(store.MaxCounter))
	}
	if !sd.NotAfter.IsZero() && !now.Before(sd.NotAfter) {
		return 0, fmt.Errorf("%w: token %q: its key expired on %s", ErrInvalid, truncate(sd.Serial), sd.NotAfter.UTC().Format(time.DateOnly))
	}
	return int64(sd.Counter), nil
}

// readSeeds parses the seed file of req; it returns the format read.
func readSeeds(ctx context.Context, req ImportRequest) ([]seeds.Seed, string, error) {
	if len(req.Key) > 0 && req.Password != "" {
		return nil, "", fmt.Errorf("%w: give a PSKC key or a password, not both", ErrInvalid)
	}
	r := req.File
	if r == nil {
		r = bytes.NewReader(req.Data)
	}
	br := bufio.NewReaderSize(r, 4096)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, "", fmt.Errorf("read seed file: %w", err)
	}
	if len(bytes.TrimSpace(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")))) == 0 && len(head) < 512 {
		return nil, "", fmt.Errorf("%w: seed file is empty", ErrInvalid)
	}
	format := req.Format
	switch format {
	case "", FormatAuto:
		format = FormatCSV
		if t := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n"); len(t) > 0 && t[0] == '<' {
			format = FormatPSKC
		}
	case FormatCSV, FormatPSKC:
	default:
		return nil, "", fmt.Errorf("%w: format %q: want csv, pskc or auto", ErrInvalid, truncate(format))
	}
	var list []seeds.Seed
	switch {
	case format == FormatCSV && (len(req.Key) > 0 || req.Password != ""):
		return nil, "", fmt.Errorf("%w: a key or password is only for PSKC files, and this is CSV", ErrInvalid)
	case format == FormatCSV:
		list, err = seeds.ReadCSV(ctx, br)
	case req.Password != "":
		list, err = seeds.ReadPSKCPassword(ctx, br, req.Password)
	default:
		list, err = seeds.ReadPSKC(ctx, br, req.Key)
	}
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	if err != nil {
		if strings.Contains(err.Error(), fmt.Sprintf("more than %d ", seeds.MaxSeeds)) {
			return nil, "", fmt.Errorf("%w: the %s seed file holds more than %d tokens; the collector imports at most %d tokens at once: split it into several files (%v)",
				ErrInvalid, format, seeds.MaxSeeds, seeds.MaxSeeds, err)
		}
		return nil, "", fmt.Errorf("%w: %s seed file: %v", ErrInvalid, format, err)
	}
	if len(list) == 0 {
		return nil, "", fmt.Errorf("%w: %s seed file holds no tokens", ErrInvalid, format)
	}
	return list, format, nil
}

// Assign gives the unassigned token serial to the user name: a new user,
// pending until its first code, or with replace an existing one, whose
// token is replaced (pending again, recovery codes kept). It is audited
// with op ("user.assign") in the same transaction. It fails with
// [ErrUnknownToken], [ErrUserExists] or [ErrInvalid].
func (s *Service) Assign(ctx context.Context, serial, name string, replace bool, op Operator) (store.User, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, err
	}
	if serial == "" || len(serial) > 128 {
		return store.User{}, fmt.Errorf("%w: token serial must be 1 to 128 bytes", ErrInvalid)
	}
	unlock, err := s.locks.Lock(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	defer unlock()
	t, err := s.st.HardwareToken(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, fmt.Errorf("token %q: %w", truncate(serial), ErrUnknownToken)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("read token %q: %w", truncate(serial), err)
	}
	now := s.p.Now()
	if !t.NotAfter.IsZero() && !now.Before(t.NotAfter) {
		return store.User{}, fmt.Errorf("%w: token %q: its key expired on %s", ErrInvalid, truncate(serial), t.NotAfter.UTC().Format(time.DateOnly))
	}
	secret, err := s.seal.open(tokenSealName(serial), t.SecretSealed)
	if err != nil {
		return store.User{}, fmt.Errorf("token %q: %w", truncate(serial), err)
	}
	sealed, err := s.seal.seal(name, secret)
	if err != nil {
		return store.User{}, err
	}
	u := store.User{
		Name: name, State: store.UserPending, SecretSealed: sealed, Kind: t.Kind, Algorithm: t.Algorithm,
		Digits: t.Digits, Period: t.Period, Counter: t.Counter, NotAfter: t.NotAfter,
		Source: store.SourceImported, TokenSerial: serial, CreatedAt: now, CreatedBy: op.Name,
	}
	a := op.audit(now, "user.assign", name, fmt.Sprintf("token %s (%s), replace=%v", serial, t.Kind, replace))
	nu, err := s.st.AssignToken(ctx, serial, u, replace, a)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.User{}, fmt.Errorf("token %q: %w", truncate(serial), ErrUnknownToken)
	case errors.Is(err, store.ErrExists):
		return store.User{}, fmt.Errorf("user %s: %w (assign with replace to give it this token)", name, ErrUserExists)
	case err != nil:
		return store.User{}, fmt.Errorf("assign token %q to %s: %w", truncate(serial), name, err)
	}
	return nu, nil
}

// Tokens lists the unassigned tokens by serial.
func (s *Service) Tokens(ctx context.Context) ([]store.HardwareToken, error) {
	ts, err := s.st.HardwareTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
