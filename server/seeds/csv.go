package seeds

import (
	"context"
	"encoding/base32"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CSV column names. serial, user and seed are required; the others are
// optional.
var csvColumns = []string{"serial", "user", "seed", "digits", "period", "algorithm", "issuer", "model", "kind", "counter"}

// ReadCSV reads seeds from a CSV file whose first row names the columns,
// case-insensitively and in any order:
//
//	serial,user,seed,digits,period,algorithm
//	SN0001,alice,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,6,30,SHA1
//
// serial, user and seed (base32; spaces, lower case and "=" padding are
// tolerated) are required. digits (default 6), period (default 30 seconds),
// algorithm (default SHA1; SHA256 and SHA512 accepted), issuer, model, kind
// (totp, the default, or hotp) and counter (an HOTP token's initial
// counter, default 0) are optional; an HOTP row leaves period empty and a
// TOTP row counter. An unknown column is an error so that a misspelt
// optional column is not silently replaced by its default.
//
// At most [MaxSeeds] rows and [MaxFieldBytes] per field are accepted; the
// caller bounds the whole input, e.g. with [io.LimitReader]. Serials must
// be unique. Errors name the line and the column and never contain the
// seed. ctx is checked between rows.
func ReadCSV(ctx context.Context, r io.Reader) ([]Seed, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("csv: empty file: a header row is required")
	}
	if err != nil {
		return nil, fmt.Errorf("csv: %w", err)
	}
	// The header is copied: ReuseRecord lets the next Read overwrite it.
	names := make([]string, len(header))
	col := make(map[string]int, len(header))
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff") // byte order mark
		}
		line, _ := cr.FieldPos(i)
		if !isCSVColumn(name) {
			return nil, fmt.Errorf("csv line %d: unknown column %q (want %s)", line, truncate(name), strings.Join(csvColumns, ", "))
		}
		if _, dup := col[name]; dup {
			return nil, fmt.Errorf("csv line %d: column %q appears twice", line, name)
		}
		col[name] = i
		names[i] = name
	}
	for _, name := range csvColumns[:3] {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("csv: missing column %q: the first row must name the columns, e.g. serial,user,seed,digits,period", name)
		}
	}

	var seeds []Seed
	firstLine := make(map[string]int) // serial → line
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("csv: %w", err)
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// csv.ParseError names the line and column; it does not
			// quote the field.
			return nil, fmt.Errorf("csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(seeds) == maxSeeds {
			return nil, fmt.Errorf("csv line %d: more than %d rows", line, maxSeeds)
		}
		for i, f := range rec {
			if len(f) > MaxFieldBytes {
				return nil, fmt.Errorf("csv line %d, column %q: longer than %d bytes", line, names[i], MaxFieldBytes)
			}
		}
		s, err := csvSeed(rec, col)
		if err != nil {
			return nil, fmt.Errorf("csv line %d, %w", line, err)
		}
		if first, dup := firstLine[s.Serial]; dup {
			return nil, fmt.Errorf("csv line %d, column \"serial\": duplicate serial %q (first on line %d)", line, s.Serial, first)
		}
		firstLine[s.Serial] = line
		seeds = append(seeds, s)
	}
	if len(seeds) == 0 {
		return nil, errors.New("csv: no seeds after the header row")
	}
	return seeds, nil
}

func isCSVColumn(name string) bool {
	for _, c := range csvColumns {
		if c == name {
			return true
		}
	}
	return false
}

// csvSeed converts one record. Errors start with the column name and never
// contain the seed.
func csvSeed(rec []string, col map[string]int) (Seed, error) {
	get := func(name string) string {
		if i, ok := col[name]; ok {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	s := Seed{
		Kind:      TOTP,
		Serial:    get("serial"),
		User:      get("user"),
		Issuer:    get("issuer"),
		Model:     get("model"),
		Algorithm: DefaultAlgorithm,
		Digits:    DefaultDigits,
		Period:    DefaultPeriod,
	}
	for _, f := range []struct {
		name, v string
	}{{"serial", s.Serial}, {"user", s.User}, {"issuer", s.Issuer}, {"model", s.Model}} {
		if err := checkName(f.v); err != nil {
			return Seed{}, fmt.Errorf("column %q: %w", f.name, err)
		}
	}
	if s.Serial == "" {
		return Seed{}, errors.New(`column "serial": empty`)
	}
	if s.User == "" {
		return Seed{}, errors.New(`column "user": empty`)
	}

	secret, err := decodeBase32(get("seed"))
	if err != nil {
		return Seed{}, fmt.Errorf(`column "seed": %w`, err)
	}
	if n := len(secret); n < 10 || n > 64 {
		return Seed{}, fmt.Errorf(`column "seed": %d bytes, want 10 to 64`, n)
	}
	s.Secret = secret

	switch v := strings.ToLower(get("kind")); v {
	case "", TOTP:
	case HOTP:
		s.Kind, s.Period = HOTP, 0
	default:
		return Seed{}, fmt.Errorf(`column "kind": %q is not totp or hotp`, truncate(v))
	}
	if v := get("counter"); v != "" {
		if s.Kind != HOTP {
			return Seed{}, errors.New(`column "counter": only HOTP tokens (kind hotp) have a counter`)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return Seed{}, fmt.Errorf(`column "counter": %q is not an integer from 0 to 18446744073709551615`, truncate(v))
		}
		s.Counter = n
	}
	if v := get("digits"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 6 && n != 8) {
			return Seed{}, fmt.Errorf(`column "digits": %q is not 6 or 8`, truncate(v))
		}
		s.Digits = n
	}
	if v := get("period"); v != "" {
		if s.Kind == HOTP {
			return Seed{}, errors.New(`column "period": HOTP tokens (kind hotp) have no period`)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 15 || n > 120 {
			return Seed{}, fmt.Errorf(`column "period": %q is not a number of seconds from 15 to 120`, truncate(v))
		}
		s.Period = n
	}
	if v := get("algorithm"); v != "" {
		a, ok := parseAlgorithm(v)
		if !ok {
			return Seed{}, fmt.Errorf(`column "algorithm": %q is not SHA1, SHA256 or SHA512`, truncate(v))
		}
		s.Algorithm = a
	}
	if err := s.Validate(); err != nil {
		return Seed{}, fmt.Errorf("invalid seed: %w", err)
	}
	return s, nil
}

var base32NoPad = base32.StdEncoding.WithPadding(base32.NoPadding)

// decodeBase32 decodes an RFC 4648 base32 seed, ignoring spaces, case and
// trailing padding. Its errors do not quote the input.
func decodeBase32(v string) ([]byte, error) {
	v = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, v)
	v = strings.TrimRight(strings.ToUpper(v), "=")
	if v == "" {
		return nil, errors.New("empty")
	}
	switch len(v) % 8 {
	case 1, 3, 6: // no whole byte in the last group
		return nil, errors.New("not valid base32 (wrong length)")
	}
	b, err := base32NoPad.DecodeString(v)
	if err != nil {
		return nil, errors.New("not valid base32 (A-Z, 2-7)")
	}
	return b, nil
}
