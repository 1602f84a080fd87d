package seeds

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func addFiles(f *testing.F, pattern string) {
	names, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkSeeds is the readers' contract: all seeds valid, or none and an
// error.
func checkSeeds(t *testing.T, seeds []Seed, err error) {
	if err != nil {
		if seeds != nil {
			t.Fatalf("%d seeds returned with error %v", len(seeds), err)
		}
		return
	}
	if len(seeds) == 0 {
		t.Fatal("no seeds and no error")
	}
	serials := make(map[string]bool)
	for _, s := range seeds {
		if err := s.Validate(); err != nil {
			t.Fatalf("returned seed does not validate: %v", err)
		}
		if serials[s.Serial] {
			t.Fatalf("duplicate serial %q returned", s.Serial)
		}
		serials[s.Serial] = true
	}
}

func FuzzReadCSV(f *testing.F) {
	addFiles(f, "*.csv")
	f.Add([]byte("serial,user,seed\nA,b,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n"))
	f.Add([]byte("\ufeffSEED,USER,SERIAL,DIGITS,PERIOD,ALGORITHM\n\"gezd gnbv gy3t qojq gezd\",u,\"s\"\"1\",8,60,sha512\r\n"))
	f.Add([]byte("serial,user,seed,kind,counter,period\nA,b,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,hotp,7,\nC,d,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,totp,,30\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		seeds, err := ReadCSV(t.Context(), bytes.NewReader(in))
		checkSeeds(t, seeds, err)
	})
}

func FuzzReadPSKC(f *testing.F) {
	addFiles(f, "*.xml")
	key, _ := hex.DecodeString(rfcKey)
	f.Fuzz(func(t *testing.T, in []byte) {
		seeds, err := ReadPSKC(t.Context(), bytes.NewReader(in), key)
		checkSeeds(t, seeds, err)
		seeds, err = ReadPSKC(t.Context(), bytes.NewReader(in), nil)
		checkSeeds(t, seeds, err)
	})
}

// FuzzReadPSKCPassword reads a fixed password-protected file whose
// password and PBKDF2 parameters (salt, iterations, key length, PRF,
// namespace) are fuzzed: no panic, the readers' contract, at most one
// derivation per file and none beyond the iteration cap, bounded time,
// and the right parameters still open the file. The cap is lowered to
// 5,000 iterations so that each run stays fast.
func FuzzReadPSKCPassword(f *testing.F) {
	defer func(n int) { maxPBKDF2Iterations = n }(maxPBKDF2Iterations)
	maxPBKDF2Iterations = 5000
	prfs := []string{""}
	for alg := range hmacHashes {
		prfs = append(prfs, alg)
	}
	slices.Sort(prfs[1:])
	prfs = append(prfs, "http://www.w3.org/2001/04/xmldsig-more#hmac-md5")

	const password = "qwerty"
	salt, _ := base64.StdEncoding.DecodeString("Ej7/PEpyEpw=")
	key, err := pbkdf2.Key(sha1.New, password, salt, 1000, 16)
	if err != nil {
		f.Fatal(err)
	}
	secret := []byte("12345678901234567890")
	pkg := pskcDoc(pskcOpts{cipherValue: encryptCBC(f, key, bytes.Repeat([]byte{3}, 16), secret)})
	f.Add(password, salt, 1000, 16, uint8(0), false)
	f.Add(password, salt, 1000, 16, uint8(1), true)
	f.Add("", []byte{}, 0, 0, uint8(0), false)
	f.Add("pässword", salt, 5001, 32, uint8(3), true)
	f.Add(password, salt, -1, 24, uint8(200), false)

	f.Fuzz(func(t *testing.T, pw string, salt []byte, iter, keyLen int, prf uint8, xenc11 bool) {
		alg, ns, prefix := algPBKDF2, nsPKCS5, "pkcs5"
		if xenc11 {
			alg, ns, prefix = algXenc11PBKDF2, nsXenc11, "xenc11"
		}
		prfElem := "<PRF/>"
		prfAlg := prfs[int(prf)%len(prfs)]
		if prfAlg != "" {
			prfElem = `<PRF Algorithm="` + prfAlg + `"/>`
		}
		header := fmt.Sprintf(`<EncryptionKey><xenc11:DerivedKey xmlns:xenc11=%q xmlns:pkcs5=%q>
<xenc11:KeyDerivationMethod Algorithm=%q><%s:PBKDF2-params xmlns:%[4]s=%q><Salt><Specified>%s</Specified></Salt>
<IterationCount>%d</IterationCount><KeyLength>%d</KeyLength>%s</%[4]s:PBKDF2-params>
</xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>`,
			nsXenc11, nsPKCS5, alg, prefix, ns, base64.StdEncoding.EncodeToString(salt), iter, keyLen, prfElem)
		doc := strings.Replace(pkg, "\n<KeyPackage>", "\n"+header+"\n<KeyPackage>", 1)

		runs := pbkdf2Runs.Load()
		start := time.Now()
		seeds, err := ReadPSKCPassword(t.Context(), strings.NewReader(doc), pw)
		took := time.Since(start)
		runs = pbkdf2Runs.Load() - runs
		checkSeeds(t, seeds, err)
		if runs > 1 {
			t.Fatalf("%d PBKDF2 derivations for one file", runs)
		}
		if (iter < 1 || iter > maxPBKDF2Iterations) && runs != 0 {
			t.Fatalf("%d iterations derived, beyond the cap of %d", iter, maxPBKDF2Iterations)
		}
		if took > 5*time.Second {
			t.Fatalf("ReadPSKCPassword took %v", took)
		}
		if pw == password && bytes.Equal(salt, []byte("\x12\x3e\xff\x3c\x4a\x72\x12\x9c")) && iter == 1000 && keyLen == 16 &&
			(prfAlg == "" || prfAlg == nsDS+"hmac-sha1") {
			if err != nil || len(seeds) != 1 || !bytes.Equal(seeds[0].Secret, secret) {
				t.Fatalf("the right parameters: %d seeds, %v", len(seeds), err)
			}
		}
	})
}
