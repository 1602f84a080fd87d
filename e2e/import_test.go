package e2e

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Seed imports at the documented scale: 100,000 tokens through mnguardctl
// to a real collector over TLS, in the two formats, and refusals of what
// is larger, with nothing kept.

const importTokens = 100_000

// seedCSV writes a CSV seed file of n rows (users u000000...).
func seedCSV(t *testing.T, path string, n int) {
	t.Helper()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"serial", "user", "seed", "digits", "period"})
	secret := make([]byte, 20)
	for i := range n {
		rand.Read(secret)
		w.Write([]string{fmt.Sprintf("CSV%06d", i), fmt.Sprintf("u%06d", i), totp.EncodeSecret(secret), "6", "30"})
	}
	w.Flush()
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// seedPSKC writes a PSKC file of n TOTP keys as token vendors ship them
// (RFC 6030 §6.1 with a MAC: AES-128-CBC under a pre-shared key, HMAC-SHA1
// ValueMACs), the device serial, manufacturer, crypto module, issuer and
// a user for keys with even numbers; odd ones name no user. It returns the
// pre-shared key.
func seedPSKC(t *testing.T, path string, n int) []byte {
	t.Helper()
	psk, macKey := make([]byte, 16), make([]byte, 20)
	rand.Read(psk)
	rand.Read(macKey)
	block, err := aes.NewCipher(psk)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(pt []byte) []byte {
		iv := make([]byte, aes.BlockSize)
		rand.Read(iv)
		pad := aes.BlockSize - len(pt)%aes.BlockSize
		buf := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
		return append(iv, buf...)
	}
	mac := func(ct []byte) string {
		m := hmac.New(sha1.New, macKey)
		m.Write(ct)
		return base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	b64 := base64.StdEncoding.EncodeToString
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
    <pskc:EncryptionKey>
        <ds:KeyName>Pre-shared-key</ds:KeyName>
    </pskc:EncryptionKey>
    <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
        <pskc:MACKey>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
                <xenc:CipherValue>%s</xenc:CipherValue>
            </xenc:CipherData>
        </pskc:MACKey>
    </pskc:MACMethod>
`, b64(enc(macKey)))
	secret := make([]byte, 20)
	for i := range n {
		rand.Read(secret)
		ct := enc(secret)
		user := ""
		if i%2 == 0 {
			user = fmt.Sprintf("\n            <pskc:UserId>p%06d</pskc:UserId>", i)
		}
		fmt.Fprintf(&b, `    <pskc:KeyPackage>
        <pskc:DeviceInfo>
            <pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer>
            <pskc:SerialNo>PSKC%06d</pskc:SerialNo>
        </pskc:DeviceInfo>
        <pskc:CryptoModuleInfo>
            <pskc:Id>CM_ID_001</pskc:Id>
        </pskc:CryptoModuleInfo>
        <pskc:Key Id="%d" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
            <pskc:Issuer>Example-Issuer</pskc:Issuer>
            <pskc:AlgorithmParameters>
                <pskc:ResponseFormat Length="6" Encoding="DECIMAL"/>
            </pskc:AlgorithmParameters>
            <pskc:Data>
                <pskc:Secret>
                    <pskc:EncryptedValue>
                        <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
                        <xenc:CipherData>
                            <xenc:CipherValue>%s</xenc:CipherValue>
                        </xenc:CipherData>
                    </pskc:EncryptedValue>
                    <pskc:ValueMAC>%s</pskc:ValueMAC>
                </pskc:Secret>
                <pskc:Time>
                    <pskc:PlainValue>0</pskc:PlainValue>
                </pskc:Time>
                <pskc:TimeInterval>
                    <pskc:PlainValue>30</pskc:PlainValue>
                </pskc:TimeInterval>
            </pskc:Data>%s
        </pskc:Key>
    </pskc:KeyPackage>
`, i, i, b64(ct), mac(ct), user)
		if b.Len() > 1<<20 {
			f.Write(b.Bytes())
			b.Reset()
		}
	}
	b.WriteString("</pskc:KeyContainer>\n")
	f.Write(b.Bytes())
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	keyFile := path + ".key"
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(psk)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return psk
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestImport100000: a 100,000-row CSV and a 100,000-key encrypted PSKC
// file import in full through mnguardctl; one more token, or one byte
// over the limit, is refused with a message that says so, and nothing of
// the refused file is kept.
func TestImport100000(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: imports 200,000 tokens")
	}
	c := newCollector(t)
	dir := t.TempDir()

	// CSV.
	csvFile := filepath.Join(dir, "tokens.csv")
	seedCSV(t, csvFile, importTokens)
	var res mnguardv1.ImportTokensResponse
	start := time.Now()
	c.ctlJSON(t, &res, "users", "import", csvFile)
	t.Logf("CSV: %d tokens, %d bytes, imported in %v", importTokens, fileSize(t, csvFile), time.Since(start).Round(time.Millisecond))
	if res.GetTokens() != importTokens || res.GetAssigned() != importTokens {
		t.Fatalf("CSV import: %v", &res)
	}
	var u mnguardv1.GetUserResponse
	c.ctlJSON(t, &u, "users", "show", "u099999")
	if u.GetUser().GetTokenSerial() != "CSV099999" || u.GetUser().GetState() != mnguardv1.UserState_USER_STATE_PENDING {
		t.Fatalf("last user: %v", u.GetUser())
	}

	// PSKC, half of it naming no user; an assignment file gives one of
	// those to a user.
	pskcFile := filepath.Join(dir, "tokens.pskc")
	seedPSKC(t, pskcFile, importTokens)
	size := fileSize(t, pskcFile)
	assignFile := filepath.Join(dir, "assign.csv")
	if err := os.WriteFile(assignFile, []byte("serial,user\nPSKC000001,assigned1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c.ctlJSON(t, &res, "users", "import", pskcFile, "--psk-file", pskcFile+".key", "--assign", assignFile)
	t.Logf("PSKC: %d encrypted keys, %d bytes (%.0f bytes a key), imported in %v", importTokens, size, float64(size)/importTokens, time.Since(start).Round(time.Millisecond))
	if res.GetTokens() != importTokens || res.GetAssigned() != importTokens/2+1 || res.GetUnassigned() != importTokens/2-1 {
		t.Fatalf("PSKC import: %v", &res)
	}
	c.ctlJSON(t, &u, "users", "show", "assigned1")
	if u.GetUser().GetTokenSerial() != "PSKC000001" {
		t.Fatalf("assigned1: %v", u.GetUser())
	}
	var toks mnguardv1.ListTokensResponse
	c.ctlJSON(t, &toks, "users", "tokens")
	if n := len(toks.GetTokens()); n != importTokens/2-1 {
		t.Fatalf("%d unassigned tokens listed, want %d", n, importTokens/2-1)
	}
	// Assign one later.
	c.ctlJSON(t, &u, "users", "assign", "PSKC000003", "later3")
	if u.GetUser().GetName() != "later3" || u.GetUser().GetTokenSerial() != "PSKC000003" {
		t.Fatalf("assign: %v", u.GetUser())
	}

	// One token too many: refused, nothing kept.
	over := filepath.Join(dir, "over.csv")
	seedCSV(t, over, importTokens+1)
	// Other users than the first file's.
	data, err := os.ReadFile(over)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte(",u0"), []byte(",x0"))
	data = bytes.ReplaceAll(data, []byte("CSV"), []byte("OVR"))
	if err := os.WriteFile(over, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := c.ctl(t, "users", "import", over)
	if code != 1 || !strings.Contains(stderr, "at most 100000 tokens") || strings.Contains(stderr, "grpc:") {
		t.Fatalf("import of %d tokens: exit %d, %s", importTokens+1, code, stderr)
	}
	t.Logf("%d tokens: %s", importTokens+1, strings.TrimSpace(stderr))
	if _, stderr, code := c.ctl(t, "users", "show", "x000000"); code != 1 || !strings.Contains(stderr, "no such user") {
		t.Fatalf("refused import kept x000000: exit %d, %s", code, stderr)
	}

	// Over the byte limit (a sparse file): mnguardctl refuses it before
	// sending, in the collector's words.
	big := filepath.Join(dir, "big.csv")
	if err := os.WriteFile(big, []byte("serial,user,seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 256<<20+1); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = c.ctl(t, "users", "import", big)
	if code != 1 || !strings.Contains(stderr, "the collector imports files of at most 256.0 MiB") || strings.Contains(stderr, "grpc:") {
		t.Fatalf("import of 256 MiB + 1: exit %d, %s", code, stderr)
	}
	t.Logf("256 MiB + 1 byte: %s", strings.TrimSpace(stderr))
}
