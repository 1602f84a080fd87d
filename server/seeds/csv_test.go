package seeds

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestReadCSVFile(t *testing.T) {
	f, err := os.Open("testdata/tokens.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadCSV(t.Context(), f)
	if err != nil {
		t.Fatalf("ReadCSV: %v", err)
	}
	secret := []byte("12345678901234567890")
	want := []Seed{
		{Kind: TOTP, Serial: "SN0001", User: "alice", Secret: secret, Algorithm: SHA1, Digits: 6, Period: 30},
		{Kind: TOTP, Serial: "SN0002", User: "bob", Secret: secret, Algorithm: SHA256, Digits: 8, Period: 60},
		{Kind: TOTP, Serial: "SN0003", User: "carol", Secret: secret, Algorithm: SHA1, Digits: 6, Period: 30},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadCSV:\n got %+v\nwant %+v", got, want)
	}
}

func TestReadCSVHeaders(t *testing.T) {
	secret := []byte("12345678901234567890")
	tests := []struct {
		name, in string
		want     Seed
	}{
		{
			"reordered, BOM, CRLF",
			"\ufeffSEED, user ,serial\r\nGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,alice,SN1\r\n",
			Seed{Kind: TOTP, Serial: "SN1", User: "alice", Secret: secret, Algorithm: SHA1, Digits: 6, Period: 30},
		},
		{
			"optional columns",
			"serial,user,seed,algorithm,issuer,model,period,digits\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,HMAC-SHA512,Acme,T8,60,8\n",
			Seed{Kind: TOTP, Serial: "SN1", User: "alice", Secret: secret, Algorithm: SHA512, Digits: 8, Period: 60, Issuer: "Acme", Model: "T8"},
		},
		{
			"hotp",
			"serial,user,seed,kind,counter,period\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,HOTP,42,\n",
			Seed{Kind: HOTP, Serial: "SN1", User: "alice", Secret: secret, Algorithm: SHA1, Digits: 6, Counter: 42},
		},
		{
			"totp kind",
			"serial,user,seed,kind,counter\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,totp,\n",
			Seed{Kind: TOTP, Serial: "SN1", User: "alice", Secret: secret, Algorithm: SHA1, Digits: 6, Period: 30},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCSV(t.Context(), strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("ReadCSV: %v", err)
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Fatalf("ReadCSV = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// secretSeed is the seed of the error cases: no error may contain it.
const secretSeed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func TestReadCSVErrors(t *testing.T) {
	const hdr = "serial,user,seed,digits,period,algorithm\n"
	const good = "SN0001,alice," + secretSeed + ",6,30,SHA1\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty file"},
		{"header only", hdr, "no seeds"},
		{"no header", good, `unknown column "sn0001"`},
		{"missing seed column", "serial,user\nSN1,alice\n", `missing column "seed"`},
		{"missing user column", "serial,seed\nSN1," + secretSeed + "\n", `missing column "user"`},
		{"unknown column", "serial,user,seed,perod\nSN1,alice," + secretSeed + ",60\n", `line 1: unknown column "perod"`},
		{"duplicate column", "serial,user,seed,User\n", `column "user" appears twice`},
		{"bad base32", hdr + good + "SN0002,bob," + secretSeed[:20] + "1890ABCDEF,6,30,SHA1\n", `line 3, column "seed": not valid base32`},
		{"bad base32 length", hdr + "SN0002,bob," + secretSeed + "G,6,30,SHA1\n", `line 2, column "seed": not valid base32`},
		{"short seed", hdr + "SN0002,bob," + secretSeed[:8] + ",6,30,SHA1\n", `line 2, column "seed": 5 bytes, want 10 to 64`},
		{"empty seed", hdr + "SN0002,bob,,6,30,SHA1\n", `line 2, column "seed": empty`},
		{"bad digits", hdr + "SN0002,bob," + secretSeed + ",7,30,SHA1\n", `line 2, column "digits": "7" is not 6 or 8`},
		{"non-numeric digits", hdr + "SN0002,bob," + secretSeed + ",six,30,SHA1\n", `line 2, column "digits"`},
		{"bad period", hdr + "SN0002,bob," + secretSeed + ",6,300,SHA1\n", `line 2, column "period"`},
		{"bad algorithm", hdr + "SN0002,bob," + secretSeed + ",6,30,MD5\n", `line 2, column "algorithm": "MD5"`},
		{"duplicate serial", hdr + good + "SN0002,bob," + secretSeed + ",6,30,SHA1\n" + good, `line 4, column "serial": duplicate serial "SN0001" (first on line 2)`},
		{"control character in user", hdr + "SN0002,\"bo\x1bb\"," + secretSeed + ",6,30,SHA1\n", `line 2, column "user": contains control character U+001B`},
		{"newline in user", hdr + "SN0002,\"bob\nroot\"," + secretSeed + ",6,30,SHA1\n", `line 2, column "user": contains control character U+000A`},
		{"empty user", hdr + "SN0002,," + secretSeed + ",6,30,SHA1\n", `line 2, column "user": empty`},
		{"empty serial", hdr + "," + "bob," + secretSeed + ",6,30,SHA1\n", `line 2, column "serial": empty`},
		{"long user", hdr + "SN0002," + strings.Repeat("u", 200) + "," + secretSeed + ",6,30,SHA1\n", `line 2, column "user": 200 bytes`},
		{"field over 1 MiB", hdr + "SN0002,bob," + strings.Repeat("A", MaxFieldBytes+1) + ",6,30,SHA1\n", `line 2, column "seed": longer than`},
		{"ragged row", hdr + "SN0002,bob," + secretSeed + "\n", "line 2: wrong number of fields"},
		{"bare quote", hdr + "SN0002,b\"ob," + secretSeed + ",6,30,SHA1\n", "line 2, column 9"},
		{"bad kind", "serial,user,seed,kind\nSN1,bob," + secretSeed + ",ocra\n", `line 2, column "kind": "ocra" is not totp or hotp`},
		{"counter on TOTP", "serial,user,seed,counter\nSN1,bob," + secretSeed + ",5\n", `line 2, column "counter": only HOTP tokens`},
		{"bad counter", "serial,user,seed,kind,counter\nSN1,bob," + secretSeed + ",hotp,-5\n", `line 2, column "counter": "-5" is not an integer`},
		{"period on HOTP", "serial,user,seed,kind,period\nSN1,bob," + secretSeed + ",hotp,30\n", `line 2, column "period": HOTP tokens (kind hotp) have no period`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCSV(t.Context(), strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("ReadCSV = %d seeds, want error %q", len(got), tt.want)
			}
			if got != nil {
				t.Errorf("ReadCSV returned %d seeds with its error", len(got))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("ReadCSV error %q, want %q", msg, tt.want)
			}
			assertNoSecret(t, msg, secretSeed)
		})
	}
}

// assertNoSecret fails if msg contains any 8-character piece of secret,
// in any case.
func assertNoSecret(t *testing.T, msg, secret string) {
	t.Helper()
	lower := strings.ToLower(msg)
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(lower, strings.ToLower(secret[i:i+8])) {
			t.Fatalf("error %q contains part of the secret", msg)
		}
	}
}

func TestReadCSVCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := ReadCSV(ctx, strings.NewReader("serial,user,seed\nSN1,alice,"+secretSeed+"\n"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadCSV: %v, want context.Canceled", err)
	}
}

func TestReadCSVMaxRows(t *testing.T) {
	defer func(n int) { maxSeeds = n }(maxSeeds)
	maxSeeds = 3
	var b strings.Builder
	b.WriteString("serial,user,seed\n")
	for i := range 4 {
		b.WriteString("SN" + string(rune('0'+i)) + ",u," + secretSeed + "\n")
	}
	_, err := ReadCSV(t.Context(), strings.NewReader(b.String()))
	if err == nil || !strings.Contains(err.Error(), "line 5: more than 3 rows") {
		t.Fatalf("ReadCSV: %v, want more than 3 rows", err)
	}
}
