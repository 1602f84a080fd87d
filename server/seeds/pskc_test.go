package seeds

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	rfcKey     = "12345678901234567890123456789012" // RFC 6030 §6.1 examples
	opensslKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

func TestReadPSKCFiles(t *testing.T) {
	tests := []struct {
		file     string
		key      string // hex
		password string // use ReadPSKCPassword when set
		want     []Seed
		wantErr  error
		wantMsg  string
	}{
		{
			file: "rfc6030-figure6-totp.xml", key: rfcKey,
			want: []Seed{{Kind: TOTP, Serial: "987654321", Secret: []byte("12345678901234567890"), Algorithm: SHA1, Digits: 8, Period: 30, Issuer: "Issuer", Model: "Manufacturer"}},
		},
		{
			file: "rfc6030-figure7-totp.xml", password: "qwerty",
			want: []Seed{{Kind: TOTP, Serial: "987654321", Secret: []byte("12345678901234567890"), Algorithm: SHA1, Digits: 8, Period: 30, Issuer: "Example-Issuer", Model: "TokenVendorAcme"}},
		},
		{
			file: "openssl-aes256.xml", key: opensslKey,
			want: []Seed{
				{Kind: TOTP, Serial: "ACME-0001", User: "alice", Secret: []byte("12345678901234567890123456789012"), Algorithm: SHA256, Digits: 8, Period: 60, Issuer: "Acme Tokens", Model: "Acme T8"},
				{Kind: TOTP, Serial: "ACME-0002", Secret: bytes.Repeat([]byte{0x3d}, 20), Algorithm: SHA1, Digits: 6, Period: 30, Model: "Acme T6"},
			},
		},
		{
			file: "totp-plain.xml",
			want: []Seed{
				{Kind: TOTP, Serial: "SN-1001", User: "bob", Secret: []byte("12345678901234567890"), Algorithm: SHA1, Digits: 6, Period: 30, Issuer: "Acme", Model: "Acme"},
				{Kind: TOTP, Serial: "SN-1002", Secret: []byte("123456789012345678901234567890123456789012345678901234"), Algorithm: SHA512, Digits: 8, Period: 60, Model: "Acme Mini"},
			},
		},
		{file: "totp-plain.xml", key: rfcKey, want: nil /* filled below: a key is harmless */},
		{file: "rfc6030-figure6-totp.xml", wantErr: ErrKeyRequired},
		{file: "rfc6030-figure6-totp.xml", key: strings.Repeat("ab", 16), wantErr: ErrDecrypt},
		{file: "rfc6030-figure6-totp.xml", key: opensslKey, wantMsg: "encrypted with AES-128 but the key is 32 bytes"},
		{file: "rfc6030-figure6-totp.xml", password: "qwerty", wantErr: ErrKeyRequired, wantMsg: "pre-shared key, not a password"},
		{file: "rfc6030-figure7-totp.xml", key: rfcKey, wantErr: ErrKeyRequired, wantMsg: "protected with a password"},
		{file: "rfc6030-figure7-totp.xml", password: "azerty", wantErr: ErrDecrypt},
		{file: "openssl-aes256.xml", key: strings.Repeat("00", 32), wantErr: ErrDecrypt},
	}
	tests[4].want = tests[3].want
	for _, tt := range tests {
		name := tt.file + "/key=" + tt.key + "/password=" + tt.password
		t.Run(name, func(t *testing.T) {
			f, err := os.Open("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got []Seed
			if tt.password != "" {
				got, err = ReadPSKCPassword(t.Context(), f, tt.password)
			} else {
				got, err = ReadPSKC(t.Context(), f, mustHex(t, tt.key))
			}
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("read:\n got %+v\nwant %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("read = %d seeds, want error", len(got))
			}
			if got != nil {
				t.Errorf("read returned %d seeds with its error", len(got))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q, want %q", err, tt.wantMsg)
			}
		})
	}
}

// TestRFC6030Figure7Key checks PBKDF2 against the derived key the RFC
// states.
func TestRFC6030Figure7Key(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("Ej7/PEpyEpw=")
	k, err := pbkdf2.Key(sha1.New, "qwerty", salt, 1000, 16)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(k), "651e63cd57008476af1ff6422cd02e41"; got != want {
		t.Fatalf("PBKDF2 key %s, want %s", got, want)
	}
}

// TestReadPSKCOpenSSL encrypts a secret with the openssl command (an
// independent AES-CBC and PKCS#7 implementation) and reads it back.
func TestReadPSKCOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not installed (make deps installs it)")
		}
		t.Skip("openssl not installed")
	}
	key := "2b7e151628aed2a6abf7158809cf4f3c"
	iv := "000102030405060708090a0b0c0d0e0f"
	secret := []byte("totp-secret-from-openssl!") // 25 bytes: padding 7
	cmd := exec.Command("openssl", "enc", "-aes-128-cbc", "-K", key, "-iv", iv)
	cmd.Stdin = bytes.NewReader(secret)
	ct, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	value := base64.StdEncoding.EncodeToString(append(mustHex(t, iv), ct...))
	doc := pskcDoc(pskcOpts{cipherValue: value})
	got, err := ReadPSKC(t.Context(), strings.NewReader(doc), mustHex(t, key))
	if err != nil {
		t.Fatalf("ReadPSKC: %v", err)
	}
	if len(got) != 1 || !bytes.Equal(got[0].Secret, secret) {
		t.Fatalf("ReadPSKC = %+v, want the openssl secret", got)
	}
}

// encryptCBC is the test's own encryption: AES-CBC with PKCS#7 padding,
// returning base64(IV || ciphertext).
func encryptCBC(t testing.TB, key, iv, pt []byte) string {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	buf := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(append(bytes.Clone(iv), buf...))
}

func macValue(t testing.TB, macKey []byte, value string) string {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha1.New, macKey)
	m.Write(data)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// pskcOpts describes a generated single-key PSKC document.
type pskcOpts struct {
	header      string // EncryptionKey and MACMethod elements
	cipherValue string // EncryptedValue CipherValue; plain when empty
	plain       string // PlainValue (base64)
	valueMAC    string
	algorithm   string // Key Algorithm URI
	serial      string
	user        string
	extraKey    string // inside Key, after Data
	extraData   string // inside Data
	length      string // ResponseFormat Length
	rfExtra     string // more ResponseFormat attributes
	packages    int    // number of KeyPackages, serials serial-N
	version     string
	encAlg      string
}

func pskcDoc(o pskcOpts) string {
	if o.algorithm == "" {
		o.algorithm = algTOTP
	}
	if o.serial == "" {
		o.serial = "SN-1"
	}
	if o.plain == "" {
		o.plain = base64.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	}
	if o.length == "" {
		o.length = "6"
	}
	if o.packages == 0 {
		o.packages = 1
	}
	if o.version == "" {
		o.version = "1.0"
	}
	if o.encAlg == "" {
		o.encAlg = nsXenc + "aes128-cbc"
	}
	secret := "<PlainValue>" + o.plain + "</PlainValue>"
	if o.cipherValue != "" {
		secret = `<EncryptedValue><xenc:EncryptionMethod Algorithm="` + o.encAlg + `"/>` +
			"<xenc:CipherData><xenc:CipherValue>" + o.cipherValue + "</xenc:CipherValue></xenc:CipherData></EncryptedValue>"
	}
	if o.valueMAC != "" {
		secret += "<ValueMAC>" + o.valueMAC + "</ValueMAC>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0"?>
<KeyContainer Version=%q xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
%s`, o.version, o.header)
	for i := range o.packages {
		serial := o.serial
		if o.packages > 1 {
			serial = fmt.Sprintf("%s-%d", o.serial, i)
		}
		fmt.Fprintf(&b, `<KeyPackage><DeviceInfo><SerialNo>%s</SerialNo></DeviceInfo>
<Key Id="k" Algorithm=%q><AlgorithmParameters><ResponseFormat Length=%q Encoding="DECIMAL"%s/></AlgorithmParameters>
<Data><Secret>%s</Secret>%s</Data>%s<UserId>%s</UserId></Key></KeyPackage>
`, serial, o.algorithm, o.length, o.rfExtra, secret, o.extraData, o.extraKey, o.user)
	}
	b.WriteString("</KeyContainer>\n")
	return b.String()
}

func TestReadPSKCGenerated(t *testing.T) {
	key := mustHex(t, rfcKey)
	iv := mustHex(t, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
	macKey := mustHex(t, "1122334455667788990011223344556677889900")
	secret := []byte("generated-secret-0123")
	value := encryptCBC(t, key, iv, secret)
	macHeader := `<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>
<MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><MACKey>
<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
<xenc:CipherData><xenc:CipherValue>` + encryptCBC(t, key, iv, macKey) + `</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>`
	good := pskcOpts{header: macHeader, cipherValue: value, valueMAC: macValue(t, macKey, value), user: "alice"}

	t.Run("valid", func(t *testing.T) {
		got, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(good)), key)
		if err != nil {
			t.Fatal(err)
		}
		want := []Seed{{Kind: TOTP, Serial: "SN-1", User: "alice", Secret: secret, Algorithm: SHA1, Digits: 6, Period: 30}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	wrongMACKey := good
	wrongMACKey.valueMAC = macValue(t, []byte("another mac key"), value)
	tampered := good
	raw, _ := base64.StdEncoding.DecodeString(value)
	raw[3] ^= 1
	tampered.cipherValue = base64.StdEncoding.EncodeToString(raw)

	with := func(f func(*pskcOpts)) string {
		o := good
		f(&o)
		return pskcDoc(o)
	}
	deep := strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40)
	tests := []struct {
		name, doc string
		wantErr   error
		wantMsg   string
	}{
		{"MAC mismatch", pskcDoc(wrongMACKey), ErrDecrypt, "ValueMAC does not match"},
		{"tampered ciphertext", pskcDoc(tampered), ErrDecrypt, "ValueMAC does not match"},
		{"missing ValueMAC", with(func(o *pskcOpts) { o.valueMAC = "" }), nil, "without the ValueMAC"},
		{"ValueMAC without MACMethod", with(func(o *pskcOpts) { o.header = "" }), nil, "no MACMethod"},
		{"bad padding, no MAC", pskcDoc(pskcOpts{cipherValue: encryptCBC(t, mustHex(t, opensslKey[:32]), iv, secret)}), ErrDecrypt, "bad padding"},
		{"short CipherValue", pskcDoc(pskcOpts{cipherValue: base64.StdEncoding.EncodeToString(iv)}), ErrDecrypt, "not an IV and whole AES blocks"},
		{"tripledes", with(func(o *pskcOpts) { o.encAlg = nsXenc + "tripledes-cbc" }), errors.ErrUnsupported, "tripledes-cbc"},
		{"ocra", with(func(o *pskcOpts) { o.algorithm = "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1" }), errors.ErrUnsupported, "key algorithm"},
		{"PIN key only", with(func(o *pskcOpts) { o.algorithm = algPIN }), nil, "no KeyPackage with a TOTP or HOTP key"},
		{"version", with(func(o *pskcOpts) { o.version = "1.1" }), nil, `Version "1.1"`},
		{"7 digits", with(func(o *pskcOpts) { o.length = "7" }), nil, `Length "7" is not 6 or 8`},
		{"control character in UserId", with(func(o *pskcOpts) { o.user = "al&#x9;ice" }), nil, "user: contains control character U+0009"},
		{"long UserId", with(func(o *pskcOpts) { o.user = strings.Repeat("u", 300) }), nil, "user: 300 bytes"},
		{"bad base64", pskcDoc(pskcOpts{plain: "!!!"}), nil, "PlainValue: not valid base64"},
		{"short secret", pskcDoc(pskcOpts{plain: "MTIzNA=="}), nil, "secret: 4 bytes"},
		{"period", pskcDoc(pskcOpts{extraData: "<TimeInterval><PlainValue>5</PlainValue></TimeInterval>"}), nil, `TimeInterval: "5" is not an integer from 15 to 120`},
		{"two secrets", pskcDoc(pskcOpts{extraData: "<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"}), nil, "<Secret> appears twice"},
		{"deep nesting", pskcDoc(pskcOpts{extraKey: deep}), nil, "nested deeper than 32"},
		{"many elements", pskcDoc(pskcOpts{extraKey: strings.Repeat("<x/>", maxXMLNodes)}), nil, "more than 10000 elements"},
		{"duplicate serial", strings.ReplaceAll(pskcDoc(pskcOpts{packages: 2}), "SN-1-1", "SN-1-0"), nil, `KeyPackage 2: duplicate key "SN-1-0#k" (first in KeyPackage 1)`},
		{"no serial", strings.Replace(strings.Replace(pskcDoc(pskcOpts{}), "<SerialNo>SN-1</SerialNo>", "", 1), `Id="k"`, "", 1), nil, "serial: empty"},
		{"truncated", pskcDoc(pskcOpts{})[:300], nil, "unexpected EOF"},
		{"second root", pskcDoc(pskcOpts{}) + "<KeyContainer/>", nil, "content after KeyContainer"},
		{"wrong namespace", strings.Replace(pskcDoc(pskcOpts{}), "keyprov:pskc\"", "keyprov:pskc#\"", 1), nil, "root element is"},
		{"not XML", "serial,user,seed\n", nil, "no XML element"},
		{"empty container", `<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>`, nil, "no KeyPackage"},
		{"MACMethod after KeyPackage", strings.Replace(pskcDoc(pskcOpts{}), "</KeyContainer>", macHeader+"</KeyContainer>", 1), nil, "after a KeyPackage"},
		{"empty encrypted TimeInterval", pskcDoc(pskcOpts{extraData: "<TimeInterval><EncryptedValue/></TimeInterval>"}), nil, "TimeInterval: EncryptedValue: no xenc:EncryptionMethod"},
		{"entity", `<!DOCTYPE x [<!ENTITY a "aaaa">]>` + strings.Replace(pskcDoc(pskcOpts{}), "SN-1", "&a;", 1)[len(`<?xml version="1.0"?>`):], nil, "invalid character entity &a;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPSKC(t.Context(), strings.NewReader(tt.doc), key)
			if err == nil {
				t.Fatalf("ReadPSKC = %+v, want error %q", got, tt.wantMsg)
			}
			if got != nil {
				t.Errorf("ReadPSKC returned %d seeds with its error", len(got))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q, want %q", err, tt.wantMsg)
			}
			for _, s := range []string{string(secret), hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), "12345678901234567890"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains the secret", err)
				}
			}
		})
	}
}

func TestReadPSKCMaxPackages(t *testing.T) {
	defer func(n int) { maxSeeds = n }(maxSeeds)
	maxSeeds = 3
	_, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(pskcOpts{packages: 4})), nil)
	if err == nil || !strings.Contains(err.Error(), "more than 3 KeyPackages") {
		t.Fatalf("ReadPSKC: %v, want more than 3 KeyPackages", err)
	}
	if _, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(pskcOpts{packages: 3})), nil); err != nil {
		t.Fatalf("ReadPSKC with 3 KeyPackages: %v", err)
	}
}

func TestReadPSKCBadKeySize(t *testing.T) {
	_, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(pskcOpts{})), []byte("short"))
	if err == nil || !strings.Contains(err.Error(), "pre-shared key is 5 bytes") {
		t.Fatalf("ReadPSKC: %v", err)
	}
}
