package seeds

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
)

// PSKC key algorithms (RFC 6030 §10.1 and the TOTP profile).
const (
	algTOTP   = "urn:ietf:params:xml:ns:keyprov:pskc:totp"
	algHOTP   = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"
	algPBKDF2 = nsPKCS5 + "pbkdf2"
)

// maxPBKDF2Iterations bounds the work a password-protected file can ask
// for.
const maxPBKDF2Iterations = 5_000_000

// ReadPSKC reads TOTP seeds from a PSKC 1.0 (RFC 6030) KeyContainer.
//
// Secrets may be plain (PlainValue, base64) or encrypted with a pre-shared
// key (RFC 6030 §6.1: xmlenc aes128-cbc, aes192-cbc or aes256-cbc, the
// CipherValue being the IV followed by the PKCS#7-padded ciphertext). key
// is that pre-shared key (16, 24 or 32 bytes) and may be nil for files
// without encrypted values. When the container declares a MACMethod
// (HMAC-SHA1, or HMAC-SHA224/256/384/512) every encrypted value must carry
// a ValueMAC, which is verified with the MACKey (itself encrypted with the
// pre-shared key) before decrypting.
//
// From each KeyPackage it takes DeviceInfo SerialNo (or, without one, the
// Key Id), Manufacturer and Model, Key Issuer and UserId,
// AlgorithmParameters ResponseFormat Length (digits, default 6) and Suite
// (hash, default SHA1), Data Secret and Data TimeInterval (period, default
// 30). Time, TimeDrift, Counter and Policy are ignored. Keys whose
// Algorithm is not TOTP, HOTP included, are refused with an error wrapping
// [errors.ErrUnsupported]. Files protected with a password (§6.2) are
// refused; read them with [ReadPSKCPassword].
//
// A wrong key fails with an error wrapping [ErrDecrypt] (MAC or padding
// check) or naming the key size; encrypted values without a key fail with
// [ErrKeyRequired]. Without a MAC a wrong key is only caught by the padding
// check and, rarely, by [Seed.Validate]: prefer files with a MACMethod.
// At most [MaxSeeds] key packages are read; the caller bounds the input
// size, e.g. with [io.LimitReader]. The XML signature, if any, is not
// verified.
func ReadPSKC(ctx context.Context, r io.Reader, key []byte) ([]Seed, error) {
	if len(key) != 0 && !validKeySize(len(key)) {
		return nil, fmt.Errorf("pskc: pre-shared key is %d bytes, want 16, 24 or 32", len(key))
	}
	return (&pskcReader{ctx: ctx, key: key}).read(r)
}

// ReadPSKCPassword is [ReadPSKC] for files whose encryption key is derived
// from a password with PBKDF2 (RFC 6030 §6.2: EncryptionKey holds an
// xenc11:DerivedKey with pkcs5:PBKDF2-params). The PRF is HMAC-SHA1 unless
// the parameters name another HMAC; at most 5,000,000 iterations are
// accepted. A file without a DerivedKey is refused unless it holds no
// encrypted values.
func ReadPSKCPassword(ctx context.Context, r io.Reader, password string) ([]Seed, error) {
	return (&pskcReader{ctx: ctx, password: password, passwordMode: true}).read(r)
}

// pskcReader holds the state of one ReadPSKC call.
type pskcReader struct {
	ctx          context.Context
	key          []byte // the encryption key, once known
	password     string
	passwordMode bool
	derived      bool // the file has a DerivedKey (password protection)

	macHash func() hash.Hash // nil without a MACMethod
	macKeyE *encrypted       // the encrypted MACKey
	macKey  []byte           // decrypted on first use
}

func (p *pskcReader) read(r io.Reader) ([]Seed, error) {
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

	var seeds []Seed
	firstPackage := make(map[string]int) // serial → KeyPackage number
	nodes := 0
	for {
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
			if len(seeds) > 0 {
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
			num := len(seeds) + 1
			if num > maxSeeds {
				return nil, fmt.Errorf("pskc line %d: more than %d KeyPackages", line, maxSeeds)
			}
			s, err := p.keyPackage(n)
			if err != nil {
				return nil, fmt.Errorf("pskc line %d, KeyPackage %d: %w", line, num, err)
			}
			if first, dup := firstPackage[s.Serial]; dup {
				return nil, fmt.Errorf("pskc line %d, KeyPackage %d: duplicate serial %q (first in KeyPackage %d)", line, num, s.Serial, first)
			}
			firstPackage[s.Serial] = num
			seeds = append(seeds, s)
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
	if len(seeds) == 0 {
		return nil, errors.New("pskc: no KeyPackage")
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
// pre-shared key, or an xenc11:DerivedKey for a password.
func (p *pskcReader) encryptionKey(n *node) error {
	dk, err := n.child(nsXenc11, "DerivedKey")
	if err != nil {
		return err
	}
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
	if alg := m.attrValue("Algorithm"); alg != algPBKDF2 {
		return fmt.Errorf("key derivation %q: %w (PBKDF2 is)", truncate(alg), errors.ErrUnsupported)
	}
	params, err := m.child(nsPKCS5, "PBKDF2-params")
	if err != nil {
		return err
	}
	if params == nil {
		return errors.New("no pkcs5:PBKDF2-params")
	}
	salt, err := params.child("", "Salt")
	if err != nil {
		return err
	}
	spec, err := salt.child("", "Specified")
	if err != nil {
		return err
	}
	if spec == nil {
		return errors.New("PBKDF2: no Salt/Specified")
	}
	saltBytes, err := decodeBase64(spec.value())
	if err != nil {
		return fmt.Errorf("PBKDF2 salt: %w", err)
	}
	iter, err := intChild(params, "IterationCount")
	if err != nil {
		return err
	}
	if iter < 1 || iter > maxPBKDF2Iterations {
		return fmt.Errorf("PBKDF2: %d iterations, want 1 to %d", iter, maxPBKDF2Iterations)
	}
	size, err := intChild(params, "KeyLength")
	if err != nil {
		return err
	}
	if !validKeySize(size) {
		return fmt.Errorf("PBKDF2: KeyLength %d, want 16, 24 or 32", size)
	}
	prf := sha1.New
	pn, err := params.child("", "PRF")
	if err != nil {
		return err
	}
	if alg := pn.attrValue("Algorithm"); alg != "" {
		h, ok := hmacHashes[alg]
		if !ok {
			return fmt.Errorf("PBKDF2 PRF %q: %w", truncate(alg), errors.ErrUnsupported)
		}
		prf = h
	}
	p.key, err = pbkdf2.Key(prf, p.password, saltBytes, iter, size)
	if err != nil {
		return fmt.Errorf("PBKDF2: %w", err)
	}
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

// decryptionKey returns the key for encrypted values.
func (p *pskcReader) decryptionKey() ([]byte, error) {
	switch {
	case p.derived && !p.passwordMode:
		return nil, fmt.Errorf("the file is protected with a password (PBKDF2), not a pre-shared key: use the password: %w", ErrKeyRequired)
	case !p.derived && p.passwordMode:
		return nil, fmt.Errorf("the file is protected with a pre-shared key, not a password: %w", ErrKeyRequired)
	case len(p.key) == 0:
		return nil, ErrKeyRequired
	}
	return p.key, nil
}

// secret decodes a Secret: PlainValue, or EncryptedValue checked against
// its ValueMAC.
func (p *pskcReader) secret(n *node) ([]byte, error) {
	plain, err := n.child(nsPSKC, "PlainValue")
	if err != nil {
		return nil, err
	}
	enc, err := n.child(nsPSKC, "EncryptedValue")
	if err != nil {
		return nil, err
	}
	mac, err := n.child(nsPSKC, "ValueMAC")
	if err != nil {
		return nil, err
	}
	switch {
	case plain != nil && enc != nil:
		return nil, errors.New("both PlainValue and EncryptedValue")
	case plain != nil:
		b, err := decodeBase64(plain.value())
		if err != nil {
			return nil, fmt.Errorf("PlainValue: %w", err)
		}
		return b, nil
	case enc == nil:
		return nil, errors.New("no PlainValue or EncryptedValue")
	}

	e, err := parseEncrypted(enc)
	if err != nil {
		return nil, fmt.Errorf("EncryptedValue: %w", err)
	}
	key, err := p.decryptionKey()
	if err != nil {
		return nil, err
	}
	switch {
	case mac == nil && p.macHash != nil:
		return nil, errors.New("EncryptedValue without the ValueMAC the MACMethod requires")
	case mac != nil && p.macHash == nil:
		return nil, errors.New("ValueMAC but no MACMethod in the KeyContainer")
	case mac != nil:
		if p.macKey == nil {
			if p.macKey, err = p.macKeyE.decrypt(key); err != nil {
				return nil, fmt.Errorf("MACKey: %w", err)
			}
		}
		want, err := decodeBase64(mac.value())
		if err != nil {
			return nil, fmt.Errorf("ValueMAC: %w", err)
		}
		m := hmac.New(p.macHash, p.macKey)
		m.Write(e.data) // RFC 6030 §6.1.1: over the IV and ciphertext
		if !hmac.Equal(m.Sum(nil), want) {
			return nil, fmt.Errorf("ValueMAC does not match: %w", ErrDecrypt)
		}
	}
	b, err := e.decrypt(key)
	if err != nil {
		return nil, fmt.Errorf("EncryptedValue: %w", err)
	}
	return b, nil
}

// keyPackage converts one KeyPackage.
func (p *pskcReader) keyPackage(kp *node) (Seed, error) {
	dev, err := kp.child(nsPSKC, "DeviceInfo")
	if err != nil {
		return Seed{}, err
	}
	key, err := kp.child(nsPSKC, "Key")
	if err != nil {
		return Seed{}, err
	}
	if key == nil {
		return Seed{}, errors.New("no Key")
	}
	switch alg := key.attrValue("Algorithm"); alg {
	case algTOTP:
	case algHOTP:
		return Seed{}, fmt.Errorf("HOTP (counter-based) keys: %w: only TOTP (%s) tokens are", errors.ErrUnsupported, algTOTP)
	case "":
		return Seed{}, errors.New("no Algorithm on Key")
	default:
		return Seed{}, fmt.Errorf("key algorithm %q: %w: only TOTP (%s) is", truncate(alg), errors.ErrUnsupported, algTOTP)
	}

	s := Seed{Kind: TOTP, Algorithm: DefaultAlgorithm, Digits: DefaultDigits, Period: DefaultPeriod}
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
			return Seed{}, err
		}
		*t.dst = c.value()
	}
	if s.Serial == "" {
		s.Serial = key.attrValue("Id")
	}
	if s.User == "" {
		c, err := dev.child(nsPSKC, "UserId")
		if err != nil {
			return Seed{}, err
		}
		s.User = c.value()
	}
	var model []string
	for _, name := range []string{"Manufacturer", "Model"} {
		c, err := dev.child(nsPSKC, name)
		if err != nil {
			return Seed{}, err
		}
		if v := c.value(); v != "" {
			model = append(model, v)
		}
	}
	s.Model = strings.Join(model, " ")

	params, err := key.child(nsPSKC, "AlgorithmParameters")
	if err != nil {
		return Seed{}, err
	}
	rf, err := params.child(nsPSKC, "ResponseFormat")
	if err != nil {
		return Seed{}, err
	}
	if rf != nil {
		if enc := rf.attrValue("Encoding"); enc != "" && enc != "DECIMAL" {
			return Seed{}, fmt.Errorf("ResponseFormat Encoding %q: %w (DECIMAL is)", truncate(enc), errors.ErrUnsupported)
		}
		if v := rf.attrValue("Length"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || (n != 6 && n != 8) {
				return Seed{}, fmt.Errorf("ResponseFormat Length %q is not 6 or 8", truncate(v))
			}
			s.Digits = n
		}
	}
	suite, err := params.child(nsPSKC, "Suite")
	if err != nil {
		return Seed{}, err
	}
	if v := suite.value(); v != "" {
		a, ok := parseAlgorithm(v)
		if !ok {
			return Seed{}, fmt.Errorf("algorithm Suite %q is not HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512", truncate(v))
		}
		s.Algorithm = a
	}

	data, err := key.child(nsPSKC, "Data")
	if err != nil {
		return Seed{}, err
	}
	if ti, err := data.child(nsPSKC, "TimeInterval"); err != nil {
		return Seed{}, err
	} else if ti != nil {
		if enc, _ := ti.child(nsPSKC, "EncryptedValue"); enc != nil {
			return Seed{}, fmt.Errorf("encrypted TimeInterval: %w", errors.ErrUnsupported)
		}
		n, err := intChild(ti, "PlainValue")
		if err != nil {
			return Seed{}, fmt.Errorf("TimeInterval: %w", err)
		}
		if n < 15 || n > 120 {
			return Seed{}, fmt.Errorf("time interval of %d seconds, want 15 to 120", n)
		}
		s.Period = n
	}
	sec, err := data.child(nsPSKC, "Secret")
	if err != nil {
		return Seed{}, err
	}
	if sec == nil {
		return Seed{}, errors.New("no Data/Secret")
	}
	if s.Secret, err = p.secret(sec); err != nil {
		return Seed{}, fmt.Errorf("secret: %w", err)
	}
	if err := s.Validate(); err != nil {
		return Seed{}, fmt.Errorf("invalid seed: %w", err)
	}
	return s, nil
}
