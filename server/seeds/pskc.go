package seeds

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PSKC key algorithms (RFC 6030 §10.1 and the TOTP profile).
const (
	algTOTP = "urn:ietf:params:xml:ns:keyprov:pskc:totp"
	algHOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"
	// algPIN is a device PIN carried next to the OTP key it protects
	// (RFC 6030 Figure 5).
	algPIN          = "urn:ietf:params:xml:ns:keyprov:pskc#pin"
	algPBKDF2       = nsPKCS5 + "pbkdf2"
	algXenc11PBKDF2 = nsXenc11 + "pbkdf2"
)

// MaxPBKDF2Iterations is the most PBKDF2 iterations a password-protected
// PSKC file may ask for. Files seen in the field use far fewer: RFC 6030's
// example 1,000, python-pskc (the common PSKC writer) 100,000 by default;
// a million is ten times that. It costs about half a second of one core
// for an AES-256 key with HMAC-SHA1 (two blocks), the dearest case
// (BenchmarkPBKDF2Max). Each file gets one derivation at most, so this
// bounds the work of one import.
const MaxPBKDF2Iterations = 1_000_000

// maxPBKDF2Iterations is MaxPBKDF2Iterations, lowered by the fuzz test.
var maxPBKDF2Iterations = MaxPBKDF2Iterations

// timeNow is the clock that key validity dates are checked against.
var timeNow = time.Now

// ReadPSKC reads TOTP and HOTP seeds from a PSKC 1.0 (RFC 6030)
// KeyContainer.
//
// Values may be plain (PlainValue) or encrypted with a pre-shared key
// (RFC 6030 §6.1: xmlenc aes128-cbc, aes192-cbc or aes256-cbc, the
// CipherValue being the IV followed by the PKCS#7-padded ciphertext). key
// is that pre-shared key (16, 24 or 32 bytes) and may be nil for files
// without encrypted values. When the container declares a MACMethod
// (HMAC-SHA1 under its xmldsig or xmldsig-more address, or
// HMAC-SHA224/256/384/512) every encrypted value must carry a ValueMAC,
// which is verified with the MACKey (itself encrypted with the pre-shared
// key) before decrypting.
//
// From each KeyPackage it takes DeviceInfo SerialNo (or, without one, the
// Key Id), Manufacturer and Model, Key Issuer and UserId (empty when the
// file names no user), AlgorithmParameters ResponseFormat Length (digits,
// default 6) and Suite (hash, default SHA1), and Data Secret. A TOTP key
// takes its period from Data TimeInterval (default 30 seconds); an HOTP key
// its initial counter from Data Counter (default 0); the other of the two,
// if present, is checked and ignored. Integer values may be
// encrypted too: the plaintext is decimal digits or a big-endian unsigned
// integer of 1 to 8 bytes. Time and TimeDrift must be integers and are
// otherwise ignored.
//
// Typed values are checked: Length, the integers above (xs:int as the
// schema says; the Counter a non-negative xs:long), ResponseFormat
// CheckDigits (a boolean; true is refused, the server does not check
// Luhn digits), and the Policy. Policy StartDate and ExpiryDate (and those
// of DeviceInfo) are xs:dateTime values (UTC when they name no zone): a key
// that has expired, or whose start is still to come, is refused, and the
// expiry is returned as [Seed.NotAfter]. A KeyUsage list must include OTP;
// a PINPolicy whose PINUsageMode is not Local, a NumberOfTransactions limit
// and any unknown Policy element or PINPolicy attribute, extensions
// included, are refused: a key whose policy is not understood is not
// used.
//
// Key packages whose Algorithm is the device PIN (RFC 6030 Figure 5) are
// skipped. When several OTP keys share a device SerialNo (RFC 6030 Figure
// 10), each is named SerialNo + "#" + Key Id ("9999999#3"), so every
// returned serial is unique; a key of such a device without an Id is
// refused. Other algorithms are refused with an error wrapping
// [errors.ErrUnsupported]. Files protected with a password (§6.2) are
// refused; read them with [ReadPSKCPassword].
//
// A wrong key fails with an error wrapping [ErrDecrypt] (MAC or padding
// check) or naming the key size; encrypted values without a key fail with
// [ErrKeyRequired]. Without a MAC a wrong key is only caught by the padding
// check and, rarely, by [Seed.Validate]: prefer files with a MACMethod.
// At most [MaxSeeds] key packages are read; the caller bounds the input
// size, e.g. with [io.LimitReader]. The XML signature, if any, is not
// verified. ctx is checked between the container's elements.
func ReadPSKC(ctx context.Context, r io.Reader, key []byte) ([]Seed, error) {
	if len(key) != 0 && !validKeySize(len(key)) {
		return nil, fmt.Errorf("pskc: pre-shared key is %d bytes, want 16, 24 or 32", len(key))
	}
	return (&pskcReader{ctx: ctx, key: key}).read(r)
}

// ReadPSKCPassword is [ReadPSKC] for files whose encryption key is derived
// from a password with PBKDF2 (RFC 6030 §6.2: EncryptionKey holds an
// xenc11:DerivedKey whose PBKDF2-params are in the PKCS #5 v2.0 or the
// XML Encryption 1.1 namespace). The PRF is HMAC-SHA1 unless the
// parameters name another HMAC.
//
// The work is bounded: a file has one EncryptionKey, so one derivation of
// at most [MaxPBKDF2Iterations] iterations, run only when an encrypted
// value needs it; and the derivation stops when ctx is done (the error
// then wraps ctx's). A file without a DerivedKey is refused unless it holds
// no encrypted values.
func ReadPSKCPassword(ctx context.Context, r io.Reader, password string) ([]Seed, error) {
	return (&pskcReader{ctx: ctx, password: password, passwordMode: true}).read(r)
}

// pskcReader holds the state of one ReadPSKC call.
type pskcReader struct {
	ctx          context.Context
	key          []byte // the encryption key, once known
	password     string
	passwordMode bool
	sawKey       bool          // an EncryptionKey was read
	keyName      string        // its KeyName or MasterKeyName
	sawMAC       bool          // a MACMethod was read
	derived      bool          // the file has a DerivedKey (password protection)
	kdf          *pbkdf2Params // derived on first use (password mode)
	now          time.Time

	macHash func() hash.Hash // nil without a MACMethod
	macKeyE *encrypted       // the encrypted MACKey
	macKey  []byte           // decrypted on first use
}

// pbkdf2Params are a DerivedKey's checked parameters.
type pbkdf2Params struct {
	prf     func() hash.Hash
	salt    []byte
	iter    int
	keySize int
}

// pskcKey is one OTP key read from a KeyPackage, before naming.
type pskcKey struct {
	seed     Seed
	keyID    string
	bySerial bool // Seed.Serial is the DeviceInfo SerialNo
	num      int  // KeyPackage number
	line     int
}

func (p *pskcReader) read(r io.Reader) ([]Seed, error) {
	p.now = timeNow()
	d := xml.NewDecoder(r)
	root, err := firstElement(d)
	if err != nil {
		return nil, fmt.Errorf("pskc: %w", err)
	}
	if root.Name.Space != nsPSKC || root.Name.Local != "KeyContainer" {
		return nil, fmt.Errorf("pskc: root element is {%s}%s, want {%s}KeyContainer", truncate(root.Name.Space), truncate(root.Name.Local), nsPSKC)
	}
	if v := (&node{attr: root.Attr}).attrValue("Version"); v != "1.0" {
		return nil, fmt.Errorf("pskc: KeyContainer Version %q, want \"1.0\"", truncate(v))
	}

	var keys []pskcKey
	packages := 0
	nodes := 0
	for {
		if err := p.ctx.Err(); err != nil {
			return nil, fmt.Errorf("pskc: %w", err)
		}
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("pskc: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, fmt.Errorf("pskc: %w", err)
		}
		if _, ok := tok.(xml.EndElement); ok {
			break // the decoder checks it matches KeyContainer
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		line, _ := d.InputPos()
		nodes = 0
		n, err := readNode(d, start.Copy(), 1, &nodes)
		if err != nil {
			return nil, fmt.Errorf("pskc line %d: %w", line, err)
		}
		switch {
		case n.is(nsPSKC, "EncryptionKey"), n.is(nsPSKC, "MACMethod"):
			if packages > 0 {
				return nil, fmt.Errorf("pskc line %d: <%s> after a KeyPackage", line, n.name.Local)
			}
			if n.name.Local == "EncryptionKey" {
				err = p.encryptionKey(n)
			} else {
				err = p.macMethod(n)
			}
			if err != nil {
				return nil, fmt.Errorf("pskc line %d, %s: %w", line, n.name.Local, err)
			}
		case n.is(nsPSKC, "KeyPackage"):
			packages++
			if packages > maxSeeds {
				return nil, fmt.Errorf("pskc line %d: more than %d KeyPackages", line, maxSeeds)
			}
			k, skip, err := p.keyPackage(n)
			if err != nil {
				return nil, fmt.Errorf("pskc line %d, KeyPackage %d: %w", line, packages, err)
			}
			if !skip {
				k.num, k.line = packages, line
				keys = append(keys, k)
			}
		}
		// Signature and extensions are ignored.
	}
	// Only comments and white space may follow the root element.
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("pskc: after KeyContainer: %w", err)
		}
		if _, ok := tok.(xml.StartElement); ok {
			return nil, errors.New("pskc: content after KeyContainer")
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("pskc: no KeyPackage with a TOTP or HOTP key")
	}
	return nameKeys(keys)
}

// nameKeys gives every key its serial: the device's, or serial#KeyId when
// the device holds several keys. Serials must end up unique.
func nameKeys(keys []pskcKey) ([]Seed, error) {
	perSerial := make(map[string]int, len(keys))
	for _, k := range keys {
		if k.bySerial {
			perSerial[k.seed.Serial]++
		}
	}
	seeds := make([]Seed, 0, len(keys))
	first := make(map[string]int, len(keys)) // name → KeyPackage number
	for _, k := range keys {
		s := k.seed
		if k.bySerial && perSerial[s.Serial] > 1 {
			if k.keyID == "" {
				return nil, fmt.Errorf("pskc line %d, KeyPackage %d: device %q holds several keys and this one has no Key Id to tell them apart", k.line, k.num, truncate(s.Serial))
			}
			s.Serial += "#" + k.keyID
			if err := checkName(s.Serial); err != nil {
				return nil, fmt.Errorf("pskc line %d, KeyPackage %d: serial#KeyId %q: %w", k.line, k.num, truncate(s.Serial), err)
			}
		}
		if num, dup := first[s.Serial]; dup {
			what := "serial"
			if s.Serial != k.seed.Serial {
				what = "key"
			}
			return nil, fmt.Errorf("pskc line %d, KeyPackage %d: duplicate %s %q (first in KeyPackage %d)", k.line, k.num, what, truncate(s.Serial), num)
		}
		first[s.Serial] = k.num
		seeds = append(seeds, s)
	}
	return seeds, nil
}

// firstElement returns the root element, skipping the prolog.
func firstElement(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return xml.StartElement{}, errors.New("no XML element")
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			return s.Copy(), nil
		}
	}
}

// encryptionKey reads the container's EncryptionKey: a ds:KeyName for a
// pre-shared key, or an xenc11:DerivedKey for a password. The key is not
// derived here: decryptionKey derives it once, when a value needs it.
func (p *pskcReader) encryptionKey(n *node) error {
	if p.sawKey {
		return errors.New("a second EncryptionKey: a KeyContainer has one (RFC 6030 §6), and every encrypted value uses it")
	}
	p.sawKey = true
	dk, err := n.child(nsXenc11, "DerivedKey")
	if err != nil {
		return err
	}
	name, err := n.child(nsDS, "KeyName")
	if err != nil {
		return err
	}
	if name == nil {
		if name, err = dk.child(nsXenc11, "MasterKeyName"); err != nil {
			return err
		}
	}
	p.keyName = name.value()
	if dk == nil {
		if p.passwordMode {
			// A pre-shared key file: the password cannot open it.
			p.key = nil
		}
		return nil
	}
	p.derived = true
	if !p.passwordMode {
		p.key = nil
		return nil
	}
	m, err := dk.child(nsXenc11, "KeyDerivationMethod")
	if err != nil {
		return err
	}
	if alg := m.attrValue("Algorithm"); alg != algPBKDF2 && alg != algXenc11PBKDF2 {
		return fmt.Errorf("key derivation %q: %w (PBKDF2 is)", truncate(alg), errors.ErrUnsupported)
	}
	// RFC 6030 puts the parameters in the PKCS #5 namespace; XML
	// Encryption 1.1, which vendors follow, in its own.
	pk, err := m.child(nsPKCS5, "PBKDF2-params")
	if err != nil {
		return err
	}
	px, err := m.child(nsXenc11, "PBKDF2-params")
	if err != nil {
		return err
	}
	params := pk
	switch {
	case pk != nil && px != nil:
		return errors.New("PBKDF2-params appears twice")
	case pk == nil && px == nil:
		return errors.New("no PBKDF2-params (pkcs5 or xenc11)")
	case pk == nil:
		params = px
	}
	salt, err := params.child("", "Salt")
	if err != nil {
		return err
	}
	if other, _ := salt.child("", "OtherSource"); other != nil {
		return fmt.Errorf("PBKDF2 Salt OtherSource: %w (Specified is)", errors.ErrUnsupported)
	}
	spec, err := salt.child("", "Specified")
	if err != nil {
		return err
	}
	if spec == nil {
		return errors.New("PBKDF2: no Salt/Specified")
	}
	kdf := &pbkdf2Params{prf: sha1.New}
	if kdf.salt, err = decodeBase64(spec.value()); err != nil {
		return fmt.Errorf("PBKDF2 salt: %w", err)
	}
	if kdf.iter, err = intChild(params, "IterationCount"); err != nil {
		return fmt.Errorf("PBKDF2: %w", err)
	}
	if kdf.iter < 1 || kdf.iter > maxPBKDF2Iterations {
		return fmt.Errorf("PBKDF2: %d iterations, want 1 to %d", kdf.iter, maxPBKDF2Iterations)
	}
	if kdf.keySize, err = intChild(params, "KeyLength"); err != nil {
		return fmt.Errorf("PBKDF2: %w", err)
	}
	if !validKeySize(kdf.keySize) {
		return fmt.Errorf("PBKDF2: KeyLength %d, want 16, 24 or 32", kdf.keySize)
	}
	pn, err := params.child("", "PRF")
	if err != nil {
		return err
	}
	if alg := pn.attrValue("Algorithm"); alg != "" {
		h, ok := hmacHashes[alg]
		if !ok {
			return fmt.Errorf("PBKDF2 PRF %q: %w", truncate(alg), errors.ErrUnsupported)
		}
		kdf.prf = h
	}
	p.kdf = kdf
	return nil
}

// intChild parses the decimal text of n's only child local, in any
// namespace.
func intChild(n *node, local string) (int, error) {
	c, err := n.child("", local)
	if err != nil {
		return 0, err
	}
	if c == nil {
		return 0, fmt.Errorf("no <%s>", local)
	}
	v, err := strconv.Atoi(c.value())
	if err != nil {
		return 0, fmt.Errorf("<%s> %q is not a number", local, truncate(c.value()))
	}
	return v, nil
}

// macMethod reads the container's MACMethod and its encrypted MACKey.
func (p *pskcReader) macMethod(n *node) error {
	if p.sawMAC {
		return errors.New("a second MACMethod")
	}
	p.sawMAC = true
	alg := n.attrValue("Algorithm")
	h, ok := hmacHashes[alg]
	if !ok {
		return fmt.Errorf("MAC algorithm %q: %w (HMAC-SHA1 and HMAC-SHA2 are)", truncate(alg), errors.ErrUnsupported)
	}
	mk, err := n.child(nsPSKC, "MACKey")
	if err != nil {
		return err
	}
	if mk == nil {
		return fmt.Errorf("no MACKey (MACKeyReference: %w)", errors.ErrUnsupported)
	}
	e, err := parseEncrypted(mk)
	if err != nil {
		return fmt.Errorf("MACKey: %w", err)
	}
	p.macHash, p.macKeyE = h, &e
	return nil
}

// decryptionKey returns the key for encrypted values, deriving it from
// the password the first time.
func (p *pskcReader) decryptionKey() ([]byte, error) {
	switch {
	case p.derived && !p.passwordMode:
		return nil, fmt.Errorf("the file is protected with a password (PBKDF2), not a pre-shared key: use the password: %w", ErrKeyRequired)
	case !p.derived && p.passwordMode:
		return nil, fmt.Errorf("the file is protected with a pre-shared key, not a password: %w", ErrKeyRequired)
	case p.kdf != nil && p.key == nil:
		k, err := pbkdf2Key(p.ctx, p.kdf.prf, p.password, p.kdf.salt, p.kdf.iter, p.kdf.keySize)
		if err != nil {
			return nil, fmt.Errorf("PBKDF2: %w", err)
		}
		p.key = k
	case len(p.key) == 0:
		return nil, ErrKeyRequired
	}
	return p.key, nil
}

// value reads a PlainValue, returned as its trimmed text, or an
// EncryptedValue checked against its ValueMAC and decrypted.
func (p *pskcReader) value(n *node) (plain string, decrypted []byte, isPlain bool, err error) {
	pv, err := n.child(nsPSKC, "PlainValue")
	if err != nil {
		return "", nil, false, err
	}
	enc, err := n.child(nsPSKC, "EncryptedValue")
	if err != nil {
		return "", nil, false, err
	}
	mac, err := n.child(nsPSKC, "ValueMAC")
	if err != nil {
		return "", nil, false, err
	}
	switch {
	case pv != nil && enc != nil:
		return "", nil, false, errors.New("both PlainValue and EncryptedValue")
	case pv != nil:
		return pv.value(), nil, true, nil
	case enc == nil:
		return "", nil, false, errors.New("no PlainValue or EncryptedValue")
	}

	e, err := parseEncrypted(enc)
	if err != nil {
		return "", nil, false, fmt.Errorf("EncryptedValue: %w", err)
	}
	if err := p.checkKeyInfo(enc); err != nil {
		return "", nil, false, fmt.Errorf("EncryptedValue: %w", err)
	}
	switch {
	case mac == nil && p.macHash != nil:
		return "", nil, false, errors.New("EncryptedValue without the ValueMAC the MACMethod requires")
	case mac != nil && p.macHash == nil:
		return "", nil, false, errors.New("ValueMAC but no MACMethod in the KeyContainer")
	}
	key, err := p.decryptionKey()
	if err != nil {
		return "", nil, false, err
	}
	if mac != nil {
		if p.macKey == nil {
			if p.macKey, err = p.macKeyE.decrypt(key); err != nil {
				return "", nil, false, fmt.Errorf("MACKey: %w", err)
			}
		}
		want, err := decodeBase64(mac.value())
		if err != nil {
			return "", nil, false, fmt.Errorf("ValueMAC: %w", err)
		}
		m := hmac.New(p.macHash, p.macKey)
		m.Write(e.data) // RFC 6030 §6.1.1: over the IV and ciphertext
		if !hmac.Equal(m.Sum(nil), want) {
			return "", nil, false, fmt.Errorf("ValueMAC does not match: %w", ErrDecrypt)
		}
	}
	b, err := e.decrypt(key)
	if err != nil {
		return "", nil, false, fmt.Errorf("EncryptedValue: %w", err)
	}
	return "", b, false, nil
}

// checkKeyInfo refuses an EncryptedValue that names a key other than the
// container's EncryptionKey: every value is decrypted with that one key,
// derived once.
func (p *pskcReader) checkKeyInfo(enc *node) error {
	ki, err := enc.child(nsDS, "KeyInfo")
	if err != nil || ki == nil {
		return err
	}
	if dk, _ := ki.child(nsXenc11, "DerivedKey"); dk != nil {
		return fmt.Errorf("a DerivedKey of its own: %w: one EncryptionKey per file, derived once, is", errors.ErrUnsupported)
	}
	name, err := ki.child(nsDS, "KeyName")
	if err != nil {
		return err
	}
	if v := name.value(); v != "" && p.keyName != "" && v != p.keyName {
		return fmt.Errorf("encrypted with key %q, but the file's EncryptionKey is %q: one key per file is supported", truncate(v), truncate(p.keyName))
	}
	return nil
}

// secret decodes a Secret: base64 PlainValue, or EncryptedValue.
func (p *pskcReader) secret(n *node) ([]byte, error) {
	plain, dec, isPlain, err := p.value(n)
	if err != nil {
		return nil, err
	}
	if !isPlain {
		return dec, nil
	}
	b, err := decodeBase64(plain)
	if err != nil {
		return nil, fmt.Errorf("PlainValue: %w", err)
	}
	return b, nil
}

// integer reads the Data element name (TimeInterval, Counter, Time,
// TimeDrift), if present: a decimal PlainValue with an optional sign, or
// an EncryptedValue whose plaintext is decimal digits or a big-endian
// unsigned integer of 1 to 8 bytes. The value must be from lo to hi.
func (p *pskcReader) integer(data *node, name string, lo, hi int64) (v int64, present bool, err error) {
	n, err := data.child(nsPSKC, name)
	if err != nil || n == nil {
		return 0, false, err
	}
	plain, dec, isPlain, err := p.value(n)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", name, err)
	}
	if !isPlain && !isDigits(dec) {
		if len(dec) < 1 || len(dec) > 8 {
			return 0, false, fmt.Errorf("%s: %d bytes decrypted, want decimal digits or a 1 to 8 byte integer", name, len(dec))
		}
		var u uint64
		for _, b := range dec {
			u = u<<8 | uint64(b)
		}
		if u > math.MaxInt64 || int64(u) < lo || int64(u) > hi {
			return 0, false, fmt.Errorf("%s: the decrypted value %d is not from %d to %d", name, u, lo, hi)
		}
		return int64(u), true, nil
	}
	if !isPlain {
		plain = string(dec)
	}
	v, perr := strconv.ParseInt(plain, 10, 64)
	digits := strings.TrimLeft(plain, "+-")
	if perr != nil || !isDigits([]byte(digits)) || len(plain)-len(digits) > 1 || v < lo || v > hi {
		if isPlain {
			return 0, false, fmt.Errorf("%s: %q is not an integer from %d to %d", name, truncate(plain), lo, hi)
		}
		return 0, false, fmt.Errorf("%s: the decrypted value is not an integer from %d to %d", name, lo, hi)
	}
	return v, true, nil
}

// isDigits reports whether b is all ASCII digits.
func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// parseBool parses an xs:boolean.
func parseBool(v string) (bool, bool) {
	switch v {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// parseDateTime parses an xs:dateTime; one without a time zone is taken
// as UTC.
func parseDateTime(v string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), true
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", v, time.UTC); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// keyPackage converts one KeyPackage. skip is true for a device PIN.
func (p *pskcReader) keyPackage(kp *node) (k pskcKey, skip bool, err error) {
	dev, err := kp.child(nsPSKC, "DeviceInfo")
	if err != nil {
		return k, false, err
	}
	key, err := kp.child(nsPSKC, "Key")
	if err != nil {
		return k, false, err
	}
	if key == nil {
		return k, false, errors.New("no Key")
	}
	s := Seed{Algorithm: DefaultAlgorithm, Digits: DefaultDigits}
	switch alg := key.attrValue("Algorithm"); alg {
	case algTOTP:
		s.Kind, s.Period = TOTP, DefaultPeriod
	case algHOTP:
		s.Kind = HOTP
	case algPIN:
		return k, true, nil
	case "":
		return k, false, errors.New("no Algorithm on Key")
	default:
		return k, false, fmt.Errorf("key algorithm %q: %w: TOTP (%s) and HOTP (%s) are", truncate(alg), errors.ErrUnsupported, algTOTP, algHOTP)
	}

	texts := []struct {
		dst   *string
		from  *node
		names []string
	}{
		{&s.Serial, dev, []string{"SerialNo"}},
		{&s.User, key, []string{"UserId"}},
		{&s.Issuer, key, []string{"Issuer"}},
	}
	for _, t := range texts {
		c, err := t.from.path(t.names...)
		if err != nil {
			return k, false, err
		}
		*t.dst = c.value()
	}
	k.keyID = key.attrValue("Id")
	k.bySerial = s.Serial != ""
	if s.Serial == "" {
		s.Serial = k.keyID
	}
	if s.User == "" {
		c, err := dev.child(nsPSKC, "UserId")
		if err != nil {
			return k, false, err
		}
		s.User = c.value()
	}
	var model []string
	for _, name := range []string{"Manufacturer", "Model"} {
		c, err := dev.child(nsPSKC, name)
		if err != nil {
			return k, false, err
		}
		if v := c.value(); v != "" {
			model = append(model, v)
		}
	}
	s.Model = strings.Join(model, " ")

	if err := p.algorithmParameters(key, &s); err != nil {
		return k, false, err
	}
	if err := p.data(key, &s); err != nil {
		return k, false, err
	}
	if s.NotAfter, err = p.validity(dev, key); err != nil {
		return k, false, err
	}
	if err := s.Validate(); err != nil {
		return k, false, fmt.Errorf("invalid seed: %w", err)
	}
	k.seed = s
	return k, false, nil
}

// algorithmParameters reads ResponseFormat and Suite.
func (p *pskcReader) algorithmParameters(key *node, s *Seed) error {
	params, err := key.child(nsPSKC, "AlgorithmParameters")
	if err != nil {
		return err
	}
	rf, err := params.child(nsPSKC, "ResponseFormat")
	if err != nil {
		return err
	}
	if rf != nil {
		if enc := rf.attrValue("Encoding"); enc != "" && enc != "DECIMAL" {
			return fmt.Errorf("ResponseFormat Encoding %q: %w (DECIMAL is)", truncate(enc), errors.ErrUnsupported)
		}
		if v := rf.attrValue("Length"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || (n != 6 && n != 8) {
				return fmt.Errorf("ResponseFormat Length %q is not 6 or 8", truncate(v))
			}
			s.Digits = n
		}
		if v := rf.attrValue("CheckDigits"); v != "" {
			check, ok := parseBool(v)
			if !ok {
				return fmt.Errorf("ResponseFormat CheckDigits %q is not a boolean (true, false, 1 or 0)", truncate(v))
			}
			if check {
				return fmt.Errorf("ResponseFormat CheckDigits true (a Luhn check digit): %w", errors.ErrUnsupported)
			}
		}
	}
	suite, err := params.child(nsPSKC, "Suite")
	if err != nil {
		return err
	}
	if v := suite.value(); v != "" {
		a, ok := parseAlgorithm(v)
		if !ok {
			return fmt.Errorf("algorithm Suite %q is not HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512", truncate(v))
		}
		s.Algorithm = a
	}
	return nil
}

// data reads Data: Secret, TimeInterval (TOTP), Counter (HOTP), and
// checks Time and TimeDrift are integers.
func (p *pskcReader) data(key *node, s *Seed) error {
	data, err := key.child(nsPSKC, "Data")
	if err != nil {
		return err
	}
	sec, err := data.child(nsPSKC, "Secret")
	if err != nil {
		return err
	}
	if sec == nil {
		return errors.New("no Data/Secret")
	}
	if s.Secret, err = p.secret(sec); err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	// The schema's types: TimeInterval, Time and TimeDrift are xs:int,
	// Counter xs:long (and a counter is not negative).
	lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
	if s.Kind == TOTP {
		lo, hi = 15, 120 // seconds
	}
	if ti, ok, err := p.integer(data, "TimeInterval", lo, hi); err != nil {
		return err
	} else if ok && s.Kind == TOTP {
		s.Period = int(ti)
	}
	if counter, ok, err := p.integer(data, "Counter", 0, math.MaxInt64); err != nil {
		return err
	} else if ok && s.Kind == HOTP {
		s.Counter = uint64(counter)
	}
	for _, name := range []string{"Time", "TimeDrift"} {
		if _, _, err := p.integer(data, name, math.MinInt32, math.MaxInt32); err != nil {
			return err
		}
	}
	return nil
}

// keyUsages are the KeyUsage values of RFC 6030 §5.
var keyUsages = []string{"OTP", "CR", "Encrypt", "Integrity", "Verify", "Unlock", "Decrypt", "KeyWrap", "Unwrap", "Derive", "Generate"}

// validity checks the Policy and the key's and device's StartDate and
// ExpiryDate, returning the earliest expiry (zero for none).
func (p *pskcReader) validity(dev, key *node) (time.Time, error) {
	policy, err := key.child(nsPSKC, "Policy")
	if err != nil {
		return time.Time{}, err
	}
	var start, expiry time.Time
	for _, n := range []*node{dev, policy} {
		for _, name := range []string{"StartDate", "ExpiryDate"} {
			c, err := n.child(nsPSKC, name)
			if err != nil || c == nil {
				if err != nil {
					return time.Time{}, err
				}
				continue
			}
			t, ok := parseDateTime(c.value())
			if !ok {
				return time.Time{}, fmt.Errorf("%s %s %q is not a date and time (xs:dateTime, e.g. 2030-12-31T00:00:00Z)", n.name.Local, name, truncate(c.value()))
			}
			switch {
			case name == "StartDate" && t.After(start):
				start = t
			case name == "ExpiryDate" && (expiry.IsZero() || t.Before(expiry)):
				expiry = t
			}
		}
	}
	usages := 0
	otp := false
	for _, c := range policy.childrenOrNil() {
		if c.name.Space != nsPSKC {
			return time.Time{}, fmt.Errorf("policy element {%s}%s: %w", truncate(c.name.Space), truncate(c.name.Local), errors.ErrUnsupported)
		}
		switch c.name.Local {
		case "StartDate", "ExpiryDate":
		case "KeyUsage":
			usages++
			v := c.value()
			if !slices.Contains(keyUsages, v) {
				return time.Time{}, fmt.Errorf("policy: KeyUsage %q is not one of %s", truncate(v), strings.Join(keyUsages, ", "))
			}
			otp = otp || v == "OTP"
		case "NumberOfTransactions":
			if _, err := strconv.ParseUint(c.value(), 10, 64); err != nil {
				return time.Time{}, fmt.Errorf("policy: NumberOfTransactions %q is not an integer", truncate(c.value()))
			}
			return time.Time{}, fmt.Errorf("policy: NumberOfTransactions: %w: the server does not count a key's uses", errors.ErrUnsupported)
		case "PINPolicy":
			if err := pinPolicy(c); err != nil {
				return time.Time{}, err
			}
		default:
			return time.Time{}, fmt.Errorf("policy element <%s>: %w (a key whose policy is not understood must not be used)", truncate(c.name.Local), errors.ErrUnsupported)
		}
	}
	if usages > 0 && !otp {
		return time.Time{}, errors.New("policy: KeyUsage does not include OTP: the key is not for one-time passwords")
	}
	const layout = time.RFC3339Nano
	switch {
	case !expiry.IsZero() && !start.IsZero() && !expiry.After(start):
		return time.Time{}, fmt.Errorf("ExpiryDate %s is not after StartDate %s", expiry.Format(layout), start.Format(layout))
	case !expiry.IsZero() && !expiry.After(p.now):
		return time.Time{}, fmt.Errorf("key expired on %s", expiry.Format(layout))
	case start.After(p.now):
		return time.Time{}, fmt.Errorf("key is not valid before %s: import the file from then on", start.Format(layout))
	}
	return expiry, nil
}

// pinPolicy checks a PINPolicy: typed attributes, and a PIN entered on
// the device only (Local), since the server does not know the PIN.
func pinPolicy(n *node) error {
	for _, a := range n.attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue // namespace declarations
		}
		if a.Name.Space != "" {
			return fmt.Errorf("PINPolicy attribute {%s}%s: %w", truncate(a.Name.Space), truncate(a.Name.Local), errors.ErrUnsupported)
		}
		v := strings.TrimSpace(a.Value)
		switch a.Name.Local {
		case "PINKeyId", "PINEncoding":
		case "PINUsageMode":
			switch v {
			case "Local":
			case "Prepend", "Append", "Algorithmic":
				return fmt.Errorf("PINPolicy PINUsageMode %q: %w: the server does not know the PIN (Local is)", v, errors.ErrUnsupported)
			default:
				return fmt.Errorf("PINPolicy PINUsageMode %q is not Local, Prepend, Append or Algorithmic", truncate(v))
			}
		case "MinLength", "MaxLength", "MaxFailedAttempts":
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				return fmt.Errorf("PINPolicy %s %q is not an integer", a.Name.Local, truncate(v))
			}
		default:
			return fmt.Errorf("PINPolicy attribute %s: %w", truncate(a.Name.Local), errors.ErrUnsupported)
		}
	}
	return nil
}
