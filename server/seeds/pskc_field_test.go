package seeds

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestReadPSKCFieldFiles reads files laid out as RFC 6030's examples and
// vendors' exports are (issue 11, point 11).
func TestReadPSKCFieldFiles(t *testing.T) {
	rfcSecret := []byte("12345678901234567890")
	hotp := func(serial string, notAfter string) Seed {
		s := Seed{Kind: HOTP, Serial: serial, Secret: rfcSecret, Algorithm: SHA1, Digits: 8, Issuer: "Issuer", Model: "TokenVendorAcme"}
		if notAfter != "" {
			s.NotAfter = date(notAfter)
		}
		return s
	}
	tests := []struct {
		file     string
		key      string
		password string
		want     []Seed
		wantMsg  string
	}{
		{
			// xenc11 PBKDF2, xmldsig-more#hmac-sha1, encrypted
			// TimeInterval, Time and Counter, HOTP, no UserId.
			file: "vendor-xenc11.xml", password: "Token Vendor 2026",
			want: []Seed{
				{Kind: TOTP, Serial: "FT-0001", Secret: rfcSecret, Algorithm: SHA1, Digits: 6, Period: 60, NotAfter: date("2099-12-31T00:00:00Z"), Model: "TokenVendor c200"},
				{Kind: HOTP, Serial: "FT-0002", Secret: bytes.Repeat([]byte{0x42}, 32), Algorithm: SHA1, Digits: 8, Counter: 42, Model: "TokenVendor c100"},
			},
		},
		{file: "vendor-xenc11.xml", password: "Token Vendor 2025", wantMsg: "wrong key or corrupt file"},
		{
			// HOTP with its device PIN in a second package of the
			// same serial: the PIN key is skipped.
			file: "rfc6030-figure5.xml",
			want: []Seed{{Kind: HOTP, Serial: "987654321", Secret: rfcSecret, Algorithm: SHA1, Digits: 8, Issuer: "Issuer", Model: "Manufacturer"}},
		},
		{
			file: "rfc6030-figure6.xml", key: rfcKey,
			want: []Seed{{Kind: HOTP, Serial: "987654321", Secret: rfcSecret, Algorithm: SHA1, Digits: 8, Issuer: "Issuer", Model: "Manufacturer"}},
		},
		{
			// Several keys of one device: serial#KeyId.
			file: "rfc6030-figure10-current.xml",
			want: []Seed{
				hotp("654321", "2099-05-31T00:00:00Z"),
				hotp("123456", "2099-05-31T00:00:00Z"),
				hotp("9999999#3", "2099-03-31T00:00:00Z"),
				hotp("9999999#4", "2099-04-30T00:00:00Z"),
			},
		},
		{file: "rfc6030-figure10.xml", wantMsg: "KeyPackage 1: key expired on 2006-05-31T00:00:00Z"},
		{file: "rfc6030-figure2.xml", wantMsg: "secret: 4 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.password, func(t *testing.T) {
			data, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var got []Seed
			if tt.password != "" {
				got, err = ReadPSKCPassword(t.Context(), bytes.NewReader(data), tt.password)
			} else {
				got, err = ReadPSKC(t.Context(), bytes.NewReader(data), mustHex(t, tt.key))
			}
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("read = %d seeds, %v; want error %q", len(got), err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("read:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestReadPSKCTypedFields checks that typed values PSKC files carry are
// parsed, and bad ones refused with a message naming them.
func TestReadPSKCTypedFields(t *testing.T) {
	plainInt := func(name, v string) string {
		return "<" + name + "><PlainValue>" + v + "</PlainValue></" + name + ">"
	}
	policy := func(inner string) string { return "<Policy>" + inner + "</Policy>" }
	now := time.Now().UTC()
	tests := []struct {
		name    string
		o       pskcOpts
		wantErr error
		wantMsg string
	}{
		{"CheckDigits not boolean", pskcOpts{rfExtra: ` CheckDigits="maybe"`}, nil, `CheckDigits "maybe" is not a boolean`},
		{"CheckDigits true", pskcOpts{rfExtra: ` CheckDigits="true"`}, errors.ErrUnsupported, "CheckDigits"},
		{"TimeInterval not integer", pskcOpts{extraData: plainInt("TimeInterval", "thirty")}, nil, `TimeInterval: "thirty" is not an integer from 15 to 120`},
		{"Counter not integer", pskcOpts{extraData: plainInt("Counter", "x1")}, nil, `Counter: "x1" is not an integer`},
		{"Counter negative", pskcOpts{algorithm: algHOTP, extraData: plainInt("Counter", "-1")}, nil, `Counter: "-1" is not an integer from 0 to 9223372036854775807`},
		{"Counter beyond xs:long", pskcOpts{algorithm: algHOTP, extraData: plainInt("Counter", "9223372036854775808")}, nil, `Counter: "9223372036854775808" is not an integer from 0`},
		{"Time beyond xs:int", pskcOpts{extraData: plainInt("Time", "2147483648")}, nil, `Time: "2147483648" is not an integer from -2147483648 to 2147483647`},
		{"TimeInterval too short", pskcOpts{extraData: plainInt("TimeInterval", "5")}, nil, `TimeInterval: "5" is not an integer from 15 to 120`},
		{"two signs", pskcOpts{extraData: plainInt("TimeDrift", "+-1")}, nil, `TimeDrift: "+-1" is not an integer`},
		{"Time not integer", pskcOpts{extraData: plainInt("Time", "1.5")}, nil, `Time: "1.5" is not an integer`},
		{"TimeDrift not integer", pskcOpts{extraData: plainInt("TimeDrift", "abc")}, nil, `TimeDrift: "abc" is not an integer`},
		{"TimeInterval in an HOTP key", pskcOpts{algorithm: algHOTP, extraData: plainInt("TimeInterval", "ab")}, nil, `TimeInterval: "ab" is not an integer`},
		{"NumberOfTransactions", pskcOpts{extraKey: policy("<NumberOfTransactions>many</NumberOfTransactions>")}, nil, `NumberOfTransactions "many" is not an integer`},
		{"NumberOfTransactions limit", pskcOpts{extraKey: policy("<NumberOfTransactions>10</NumberOfTransactions>")}, errors.ErrUnsupported, "NumberOfTransactions"},
		{"PINPolicy MinLength", pskcOpts{extraKey: policy(`<PINPolicy MinLength="four"/>`)}, nil, `PINPolicy MinLength "four" is not an integer`},
		{"PINPolicy Prepend", pskcOpts{extraKey: policy(`<PINPolicy PINUsageMode="Prepend"/>`)}, errors.ErrUnsupported, `PINUsageMode "Prepend"`},
		{"PINPolicy extension attribute", pskcOpts{extraKey: policy(`<PINPolicy xmlns:v="urn:vendor" v:Biometric="true"/>`)}, errors.ErrUnsupported, "PINPolicy attribute {urn:vendor}Biometric"},
		{"Policy extension element", pskcOpts{extraKey: policy(`<v:GeoFence xmlns:v="urn:vendor">JP</v:GeoFence>`)}, errors.ErrUnsupported, "policy element {urn:vendor}GeoFence"},
		{"PINPolicy unknown mode", pskcOpts{extraKey: policy(`<PINPolicy PINUsageMode="Sometimes"/>`)}, nil, `PINUsageMode "Sometimes" is not`},
		{"KeyUsage not OTP", pskcOpts{extraKey: policy("<KeyUsage>Encrypt</KeyUsage>")}, nil, "KeyUsage does not include OTP"},
		{"KeyUsage unknown", pskcOpts{extraKey: policy("<KeyUsage>OTP</KeyUsage><KeyUsage>Fly</KeyUsage>")}, nil, `KeyUsage "Fly" is not`},
		{"ExpiryDate not a date", pskcOpts{extraKey: policy("<ExpiryDate>tomorrow</ExpiryDate>")}, nil, `ExpiryDate "tomorrow" is not a date and time`},
		{"expired", pskcOpts{extraKey: policy("<ExpiryDate>" + now.Add(-time.Minute).Format(time.RFC3339) + "</ExpiryDate>")}, nil, "key expired on"},
		{"not yet valid", pskcOpts{extraKey: policy("<StartDate>" + now.Add(48*time.Hour).Format(time.RFC3339) + "</StartDate>")}, nil, "key is not valid before"},
		{"StartDate not a date", pskcOpts{extraKey: policy("<StartDate>2020-13-01T00:00:00Z</StartDate>")}, nil, `StartDate "2020-13-01T00:00:00Z" is not a date and time`},
		{"Length not integer", pskcOpts{length: "six"}, nil, `Length "six" is not 6 or 8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(tt.o)), nil)
			if err == nil {
				t.Fatalf("ReadPSKC = %+v, want error %q", got, tt.wantMsg)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q, want %q", err, tt.wantMsg)
			}
		})
	}

	valid := []struct {
		name string
		o    pskcOpts
		want func(*Seed)
	}{
		{"no user", pskcOpts{}, func(*Seed) {}},
		{"HOTP counter", pskcOpts{algorithm: algHOTP, extraData: plainInt("Counter", "9223372036854775807")}, func(s *Seed) {
			s.Kind, s.Period, s.Counter = HOTP, 0, 1<<63-1
		}},
		{"HOTP without counter", pskcOpts{algorithm: algHOTP}, func(s *Seed) { s.Kind, s.Period = HOTP, 0 }},
		{"TOTP with typed extras", pskcOpts{
			length:    "8",
			rfExtra:   ` CheckDigits="0"`,
			extraData: plainInt("Time", "0") + plainInt("TimeDrift", "-2") + plainInt("TimeInterval", "60"),
			extraKey: policy("<StartDate>2020-01-01T00:00:00+09:00</StartDate><ExpiryDate>2099-01-01T00:00:00.5Z</ExpiryDate>" +
				`<PINPolicy PINUsageMode="Local" MinLength="4" MaxFailedAttempts="3"/><KeyUsage>OTP</KeyUsage>`),
		}, func(s *Seed) {
			s.Digits, s.Period = 8, 60
			s.NotAfter = date("2099-01-01T00:00:00.5Z")
		}},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(tt.o)), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := Seed{Kind: TOTP, Serial: "SN-1", Secret: []byte("12345678901234567890"), Algorithm: SHA1, Digits: 6, Period: 30}
			tt.want(&want)
			if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestReadPSKCEncryptedIntegers checks encrypted TimeInterval and Counter
// values: decimal digits or a big-endian integer, under the MAC.
func TestReadPSKCEncryptedIntegers(t *testing.T) {
	key := mustHex(t, rfcKey)
	iv := mustHex(t, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
	macKey := mustHex(t, "1122334455667788990011223344556677889900")
	header := `<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>
<MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><MACKey>
<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
<xenc:CipherData><xenc:CipherValue>` + encryptCBC(t, key, iv, macKey) + `</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>`
	secret := encryptCBC(t, key, iv, []byte("12345678901234567890"))
	enc := func(name string, pt []byte, mac bool) string {
		v := encryptCBC(t, key, iv, pt)
		s := `<` + name + `><EncryptedValue><xenc:EncryptionMethod Algorithm="` + nsXenc + `aes128-cbc"/>` +
			`<xenc:CipherData><xenc:CipherValue>` + v + `</xenc:CipherValue></xenc:CipherData></EncryptedValue>`
		if mac {
			s += "<ValueMAC>" + macValue(t, macKey, v) + "</ValueMAC>"
		}
		return s + "</" + name + ">"
	}
	base := pskcOpts{header: header, cipherValue: secret, valueMAC: macValue(t, macKey, secret)}
	tests := []struct {
		name    string
		alg     string
		data    string
		mac     string // MACMethod Algorithm, when not xmldsig#hmac-sha1
		period  int
		counter uint64
		wantMsg string
	}{
		{name: "xmldsig-more#hmac-sha1 MAC", mac: "http://www.w3.org/2001/04/xmldsig-more#hmac-sha1", period: 30},
		{name: "TimeInterval digits", data: enc("TimeInterval", []byte("60"), true), period: 60},
		{name: "TimeInterval big-endian", data: enc("TimeInterval", []byte{0, 0, 0, 90}, true), period: 90},
		{name: "TimeInterval out of range", data: enc("TimeInterval", []byte{1, 0}, true), wantMsg: "TimeInterval: the decrypted value 256 is not from 15 to 120"},
		{name: "TimeInterval without MAC", data: enc("TimeInterval", []byte("60"), false), wantMsg: "TimeInterval: EncryptedValue without the ValueMAC"},
		{name: "Counter", alg: algHOTP, data: enc("Counter", []byte{0, 0, 0, 0, 0, 0, 1, 2}, true), counter: 258},
		{name: "Counter too long", alg: algHOTP, data: enc("Counter", make([]byte, 9), true), wantMsg: "Counter: 9 bytes"},
		{name: "Counter empty", alg: algHOTP, data: enc("Counter", nil, true), wantMsg: "Counter: 0 bytes"},
		{name: "Time", data: enc("Time", []byte("0"), true), period: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			o.extraData = tt.data
			if tt.mac != "" {
				o.header = strings.Replace(o.header, "http://www.w3.org/2000/09/xmldsig#hmac-sha1", tt.mac, 1)
			}
			if tt.alg != "" {
				o.algorithm = tt.alg
			}
			got, err := ReadPSKC(t.Context(), strings.NewReader(pskcDoc(o)), key)
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("ReadPSKC = %+v, %v; want error %q", got, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Period != tt.period || got[0].Counter != tt.counter {
				t.Fatalf("period %d counter %d, want %d and %d", got[0].Period, got[0].Counter, tt.period, tt.counter)
			}
		})
	}
}

// TestReadPSKCSharedSerial checks the naming of several keys of one
// device.
func TestReadPSKCSharedSerial(t *testing.T) {
	two := strings.ReplaceAll(pskcDoc(pskcOpts{packages: 2}), "SN-1-1", "SN-1-0")
	withIDs := strings.Replace(two, `Id="k"`, `Id="a"`, 1)
	got, err := ReadPSKC(t.Context(), strings.NewReader(withIDs), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Serial != "SN-1-0#a" || got[1].Serial != "SN-1-0#k" {
		t.Fatalf("serials %+v, want SN-1-0#a and SN-1-0#k", got)
	}
	// The same Key Id twice is a duplicate.
	if _, err := ReadPSKC(t.Context(), strings.NewReader(two), nil); err == nil || !strings.Contains(err.Error(), `KeyPackage 2: duplicate key "SN-1-0#k" (first in KeyPackage 1)`) {
		t.Fatalf("ReadPSKC: %v, want a duplicate key", err)
	}
	// Without a Key Id the keys cannot be told apart.
	noID := strings.Replace(two, ` Id="k"`, "", 1)
	if _, err := ReadPSKC(t.Context(), strings.NewReader(noID), nil); err == nil || !strings.Contains(err.Error(), `KeyPackage 1: device "SN-1-0" holds several keys and this one has no Key Id`) {
		t.Fatalf("ReadPSKC: %v, want a missing Key Id", err)
	}
}

// passwordHeader is an EncryptionKey with a PBKDF2 DerivedKey.
func passwordHeader(iter, keyLen int, prf string) string {
	prfElem := "<PRF/>"
	if prf != "" {
		prfElem = `<PRF Algorithm="` + prf + `"/>`
	}
	return fmt.Sprintf(`<EncryptionKey><xenc11:DerivedKey xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"
 xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#">
<xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
<pkcs5:PBKDF2-params><Salt><Specified>Ej7/PEpyEpw=</Specified></Salt><IterationCount>%d</IterationCount>
<KeyLength>%d</KeyLength>%s</pkcs5:PBKDF2-params></xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>
`, iter, keyLen, prfElem)
}

// TestReadPSKCPasswordWorkBound is issue 11 point 3: a file asking for
// a thousand derivations is refused at once, whether each asks for more
// iterations than allowed or for the most allowed. This is a security
// bound, not a performance figure: before, the first file cost 1,000 ×
// 5,000,000 iterations (hours of CPU).
func TestReadPSKCPasswordWorkBound(t *testing.T) {
	iv := bytes.Repeat([]byte{7}, 16)
	for _, iter := range []int{5_000_000, 1_000_000} {
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			doc := pskcDoc(pskcOpts{
				header:      strings.Repeat(passwordHeader(iter, 16, ""), 1000),
				cipherValue: encryptCBC(t, bytes.Repeat([]byte{1}, 16), iv, []byte("12345678901234567890")),
			})
			runs := pbkdf2Runs.Load()
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := ReadPSKCPassword(t.Context(), strings.NewReader(doc), "password")
				done <- err
			}()
			select {
			case err := <-done:
				t.Logf("%d-byte file refused in %v: %v", len(doc), time.Since(start), err)
				if err == nil {
					t.Fatal("ReadPSKCPassword accepted the file")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("ReadPSKCPassword still running after 2 s (security bound: one bounded derivation per file)")
			}
			if n := pbkdf2Runs.Load() - runs; n != 0 {
				t.Errorf("%d PBKDF2 derivations, want none", n)
			}
		})
	}
}

// TestReadPSKCPasswordOneDerivation checks that a file is derived once,
// however many encrypted values it holds, and not at all without any.
func TestReadPSKCPasswordOneDerivation(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("Ej7/PEpyEpw=")
	key, err := pbkdf2.Key(sha1.New, "password", salt, 1000, 16)
	if err != nil {
		t.Fatal(err)
	}
	iv := bytes.Repeat([]byte{7}, 16)
	for _, tt := range []struct {
		name string
		o    pskcOpts
		want int64
	}{
		{"50 encrypted", pskcOpts{packages: 50, cipherValue: encryptCBC(t, key, iv, []byte("12345678901234567890"))}, 1},
		{"plain", pskcOpts{packages: 50}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.header = passwordHeader(1000, 16, "")
			runs := pbkdf2Runs.Load()
			got, err := ReadPSKCPassword(t.Context(), strings.NewReader(pskcDoc(tt.o)), "password")
			if err != nil || len(got) != 50 {
				t.Fatalf("ReadPSKCPassword = %d seeds, %v", len(got), err)
			}
			if n := pbkdf2Runs.Load() - runs; n != tt.want {
				t.Errorf("%d PBKDF2 derivations, want %d", n, tt.want)
			}
		})
	}
}

// TestPBKDF2 checks the interruptible PBKDF2 against crypto/pbkdf2 and
// RFC 6070's test vector.
func TestPBKDF2(t *testing.T) {
	got, err := pbkdf2Key(t.Context(), sha1.New, "password", []byte("salt"), 4096, 20)
	if err != nil {
		t.Fatal(err)
	}
	if h := fmt.Sprintf("%x", got); h != "4b007901b765489abead49d926f721d065a429c1" {
		t.Errorf("RFC 6070 vector: %s", h)
	}
	for name, h := range hmacHashes {
		for _, iter := range []int{1, 2, 1023, 1024, 1025, 3000} {
			for _, size := range []int{16, 24, 32} {
				want, err := pbkdf2.Key(h, "pässword", []byte("NaCl-salt"), iter, size)
				if err != nil {
					t.Fatal(err)
				}
				got, err := pbkdf2Key(t.Context(), h, "pässword", []byte("NaCl-salt"), iter, size)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s, %d iterations, %d bytes: %x, %v; want %x", name, iter, size, got, err, want)
				}
			}
		}
	}
}

// BenchmarkPBKDF2Max measures the dearest derivation a file may ask for.
func BenchmarkPBKDF2Max(b *testing.B) {
	for b.Loop() {
		if _, err := pbkdf2Key(b.Context(), sha1.New, "password", []byte("salt"), MaxPBKDF2Iterations, 32); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/derivation")
}

// TestReadPSKCOneKeyPerFile checks that an encrypted value may not name
// another key than the file's, nor a derivation of its own.
func TestReadPSKCOneKeyPerFile(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("Ej7/PEpyEpw=")
	key, err := pbkdf2.Key(sha1.New, "password", salt, 1000, 16)
	if err != nil {
		t.Fatal(err)
	}
	value := encryptCBC(t, key, bytes.Repeat([]byte{7}, 16), []byte("12345678901234567890"))
	header := strings.Replace(passwordHeader(1000, 16, ""), "</xenc11:DerivedKey>", "<xenc11:MasterKeyName>Transport 1</xenc11:MasterKeyName></xenc11:DerivedKey>", 1)
	doc := pskcDoc(pskcOpts{header: header, cipherValue: value})
	keyInfo := func(inner string) string {
		return strings.Replace(doc, "<xenc:CipherData>", "<ds:KeyInfo>"+inner+"</ds:KeyInfo><xenc:CipherData>", 1)
	}
	tests := []struct {
		name, doc, wantMsg string
	}{
		{"same key name", keyInfo("<ds:KeyName>Transport 1</ds:KeyName>"), ""},
		{"other key name", keyInfo("<ds:KeyName>Transport 2</ds:KeyName>"), `encrypted with key "Transport 2", but the file's EncryptionKey is "Transport 1"`},
		{"own derivation", keyInfo(strings.TrimSuffix(strings.TrimPrefix(passwordHeader(1000, 16, ""), "<EncryptionKey>"), "</EncryptionKey>\n")), "a DerivedKey of its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runs := pbkdf2Runs.Load()
			got, err := ReadPSKCPassword(t.Context(), strings.NewReader(tt.doc), "password")
			if tt.wantMsg == "" {
				if err != nil || len(got) != 1 {
					t.Fatalf("ReadPSKCPassword = %d seeds, %v", len(got), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("ReadPSKCPassword = %d seeds, %v; want error %q", len(got), err, tt.wantMsg)
			}
			if n := pbkdf2Runs.Load() - runs; n != 0 {
				t.Errorf("%d derivations before refusing, want none", n)
			}
		})
	}
}

// TestReadPSKCPasswordCancel checks that cancelling the context stops a
// long key derivation.
func TestReadPSKCPasswordCancel(t *testing.T) {
	iv := bytes.Repeat([]byte{7}, 16)
	// 1,000,000 iterations of HMAC-SHA1 for a 32-byte key: 2,000,000
	// HMACs, about a second.
	doc := pskcDoc(pskcOpts{
		header:      passwordHeader(1_000_000, 32, ""),
		cipherValue: encryptCBC(t, bytes.Repeat([]byte{1}, 32), iv, []byte("12345678901234567890")),
		encAlg:      nsXenc + "aes256-cbc",
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := ReadPSKCPassword(ctx, strings.NewReader(doc), "password")
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	cancelled := time.Now()
	err := <-done
	took := time.Since(cancelled)
	t.Logf("returned %v after the cancellation: %v", took, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if took > 300*time.Millisecond {
		t.Errorf("returned %v after the cancellation, want at most 300 ms", took)
	}
}

// TestReadPSKCPasswordXenc11 reads PBKDF2 parameters in the XML
// Encryption 1.1 namespace with a SHA-256 PRF, the key derived here with
// crypto/pbkdf2.
func TestReadPSKCPasswordXenc11(t *testing.T) {
	salt := []byte("0123456789abcdef")
	key, err := pbkdf2.Key(sha256.New, "secret password", salt, 1000, 16)
	if err != nil {
		t.Fatal(err)
	}
	iv := bytes.Repeat([]byte{9}, 16)
	header := `<EncryptionKey><xenc11:DerivedKey xmlns:xenc11="http://www.w3.org/2009/xmlenc11#">
<xenc11:KeyDerivationMethod Algorithm="http://www.w3.org/2009/xmlenc11#pbkdf2">
<xenc11:PBKDF2-params><xenc11:Salt><xenc11:Specified>` + base64.StdEncoding.EncodeToString(salt) + `</xenc11:Specified></xenc11:Salt>
<xenc11:IterationCount>1000</xenc11:IterationCount><xenc11:KeyLength>16</xenc11:KeyLength>
<xenc11:PRF Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"/></xenc11:PBKDF2-params>
</xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>`
	doc := pskcDoc(pskcOpts{header: header, cipherValue: encryptCBC(t, key, iv, []byte("12345678901234567890"))})
	got, err := ReadPSKCPassword(t.Context(), strings.NewReader(doc), "secret password")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Secret) != "12345678901234567890" {
		t.Fatalf("got %+v", got)
	}
}
