package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/collector"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
)

// Replicas on one PostgreSQL each read the key material from their own
// data directory, which must be a copy of the first one's: a replica with
// another CA would issue certificates the others refuse, another signing
// key exemptions the agents refuse, another totp.key could not open the
// TOTP secrets. The first replica registers the fingerprints of its keys in
// the database, as an audit entry of this action (append-only, so it is
// kept and shows when the keys were registered); every start compares the
// data directory with the earliest entry that names each key.
const keysAction = "collector.keys"

// A data directory key a replica must share with the others.
type dataKey struct {
	name  string   // in the audit entry: ca, signing, totp
	files []string // in the data directory
	what  string
}

var dataKeys = []dataKey{
	{"ca", []string{ca.CertFile, ca.KeyFile}, "the CA that issues and checks agent certificates"},
	{"signing", []string{collector.SigningKeyFile}, "the key that signs exemptions"},
	{"totp", []string{collector.TOTPKeyFile}, "the key that seals TOTP secrets and offline keys"},
}

// keyFingerprints reads the fingerprint of every key present in dataDir:
// the CA's pin, SHA-256 of the signing public key, SHA-256 of totp.key
// under a label (a hash of a random 256-bit key gives nothing of it away).
// A key whose files are all absent is left out; one half present is an
// error.
func keyFingerprints(dataDir string, now time.Time) (map[string]string, error) {
	fps := map[string]string{}
	for _, k := range dataKeys {
		present := 0
		for _, f := range k.files {
			switch _, err := os.Stat(filepath.Join(dataDir, f)); {
			case err == nil:
				present++
			case !errors.Is(err, fs.ErrNotExist):
				return nil, fmt.Errorf("data directory: %w", err)
			}
		}
		if present == 0 {
			continue
		}
		var fp string
		switch k.name {
		case "ca":
			// Both files are there (LoadOrCreate refuses one alone), so
			// this loads and creates nothing.
			c, _, err := ca.LoadOrCreate(dataDir, now)
			if err != nil {
				return nil, err
			}
			fp = c.Pin()
		case "signing":
			key, _, err := ca.LoadOrCreateSigningKey(filepath.Join(dataDir, collector.SigningKeyFile))
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(key.Public().(ed25519.PublicKey))
			fp = "sha256:" + hex.EncodeToString(sum[:])
		case "totp":
			key, err := logins.LoadKey(filepath.Join(dataDir, collector.TOTPKeyFile))
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(append([]byte("mnguard totp.key fingerprint\x00"), key...))
			fp = "sha256:" + hex.EncodeToString(sum[:])
		}
		fps[k.name] = fp
	}
	return fps, nil
}

// formatKeyRecord is the detail of a keys audit entry: "ca=sha256:…
// signing=sha256:… totp=sha256:…", names in dataKeys order.
func formatKeyRecord(fps map[string]string) string {
	var parts []string
	for _, k := range dataKeys {
		if fp, ok := fps[k.name]; ok {
			parts = append(parts, k.name+"="+fp)
		}
	}
	return strings.Join(parts, " ")
}

var fingerprintRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// parseKeyRecord reads the detail of a keys audit entry. Unknown names,
// repeated names and malformed fingerprints are errors: the entry is
// written only by this program.
func parseKeyRecord(detail string) (map[string]string, error) {
	fps := map[string]string{}
	for field := range strings.FieldsSeq(detail) {
		name, fp, ok := strings.Cut(field, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("%q: want NAME=sha256:HEX", field)
		case !slices.ContainsFunc(dataKeys, func(k dataKey) bool { return k.name == name }):
			return nil, fmt.Errorf("%q: unknown key %q", field, name)
		case fps[name] != "":
			return nil, fmt.Errorf("key %q named twice", name)
		case !fingerprintRE.MatchString(fp):
			return nil, fmt.Errorf("%q: fingerprint is not sha256: and 64 hex digits", field)
		}
		fps[name] = fp
	}
	if len(fps) == 0 {
		return nil, errors.New("no key named")
	}
	return fps, nil
}

// registeredKey is the fingerprint the database holds for one key, and
// the audit entry that registered it.
type registeredKey struct {
	fp    string
	entry store.AuditEntry
}

// registeredKeys reads, for every key, the earliest keys audit entry that
// names it.
func registeredKeys(ctx context.Context, st *store.DB) (map[string]registeredKey, error) {
	es, err := st.FilterAudit(ctx, store.AuditFilter{ActionPrefix: keysAction, Ascending: true, Limit: 1000})
	if err != nil {
		return nil, err
	}
	reg := map[string]registeredKey{}
	for _, e := range es {
		if e.Action != keysAction {
			continue
		}
		fps, err := parseKeyRecord(e.Detail)
		if err != nil {
			return nil, fmt.Errorf("audit entry %d (%s): %w", e.ID, keysAction, err)
		}
		for name, fp := range fps {
			if _, ok := reg[name]; !ok {
				reg[name] = registeredKey{fp: fp, entry: e}
			}
		}
	}
	return reg, nil
}

// KeyMismatchError says which key of the data directory differs from the
// one registered in the database, and how to fix it.
type KeyMismatchError struct {
	Key, Files, What string
	Have, Want       string // Have is "" when the files are missing
	EntryID          int64
	Registered       time.Time
	DataDir          string
}

func (e *KeyMismatchError) Error() string {
	have := "missing from " + e.DataDir
	if e.Have != "" {
		have = "is " + e.Have + " in " + e.DataDir
	}
	return fmt.Sprintf("%s (%s) %s, but the replicas of this database use %s (registered by audit entry %d at %s): "+
		"every replica must run with a copy of the first replica's data directory keys; copy %s from it into %s "+
		"(mode 0600, owned by the user mnguard-server runs as) and start again",
		e.Files, e.What, have, e.Want, e.EntryID, e.Registered.UTC().Format(time.RFC3339), e.Files, e.DataDir)
}

// checkKeys compares the keys in dataDir with those registered in st. A
// key registered but missing or different is a *KeyMismatchError. It
// returns the keys present but not yet registered (all of them on the
// first start), for registerKeys once Init has created what was missing.
func checkKeys(ctx context.Context, st *store.DB, dataDir string, now time.Time) (unregistered map[string]string, err error) {
	reg, err := registeredKeys(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("read the registered keys: %w", err)
	}
	have, err := keyFingerprints(dataDir, now)
	if err != nil {
		return nil, err
	}
	unregistered = map[string]string{}
	for _, k := range dataKeys {
		r, ok := reg[k.name]
		if !ok {
			if fp, ok := have[k.name]; ok {
				unregistered[k.name] = fp
			}
			continue
		}
		if have[k.name] != r.fp {
			return nil, &KeyMismatchError{Key: k.name, Files: strings.Join(k.files, " and "), What: k.what,
				Have: have[k.name], Want: r.fp, EntryID: r.entry.ID, Registered: r.entry.Time, DataDir: dataDir}
		}
	}
	return unregistered, nil
}

// registerKeys checks dataDir's keys against st and registers those not
// registered yet, in one audit entry. Two replicas registering different
// keys at once: the earlier entry wins and the check after registering
// refuses the other.
func registerKeys(ctx context.Context, st *store.DB, dataDir string, now time.Time) error {
	unregistered, err := checkKeys(ctx, st, dataDir, now)
	if err != nil {
		return err
	}
	if len(unregistered) == 0 {
		return nil
	}
	host, _ := os.Hostname()
	if _, err := st.AppendAudit(ctx, store.AuditEntry{Time: now, Actor: "mnguard-server", Action: keysAction,
		Target: host + ":" + dataDir, Detail: formatKeyRecord(unregistered)}); err != nil {
		return fmt.Errorf("register the data directory's keys: %w", err)
	}
	_, err = checkKeys(ctx, st, dataDir, now)
	return err
}
