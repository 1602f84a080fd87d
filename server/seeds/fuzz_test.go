package seeds

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
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
