package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// hotpCodes returns the HOTP codes of counters from..from+n-1 from
// oathtool, an implementation independent of ours.
func hotpCodes(t *testing.T, hexSecret string, from, n int) []string {
	t.Helper()
	out, err := exec.Command("oathtool", "--hotp", "-c", strconv.Itoa(from), "-w", strconv.Itoa(n-1), hexSecret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	codes := strings.Fields(string(out))
	if len(codes) != n {
		t.Fatalf("oathtool printed %d codes, want %d", len(codes), n)
	}
	return codes
}

// hotpPSKC is a PSKC file of HOTP hardware tokens that name no user, one
// per serial, with an expiry date each.
func hotpPSKC(t *testing.T, path string, secret []byte, keys map[string]time.Time) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
`)
	for serial, expiry := range keys {
		fmt.Fprintf(&b, `<KeyPackage>
  <DeviceInfo><Manufacturer>Acme</Manufacturer><SerialNo>%s</SerialNo></DeviceInfo>
  <Key Id="%s" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
    <AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
    <Data>
      <Secret><PlainValue>%s</PlainValue></Secret>
      <Counter><PlainValue>0</PlainValue></Counter>
    </Data>
    <Policy><ExpiryDate>%s</ExpiryDate></Policy>
  </Key>
</KeyPackage>
`, serial, serial, base64.StdEncoding.EncodeToString(secret), expiry.UTC().Format(time.RFC3339))
	}
	b.WriteString("</KeyContainer>\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHOTPLogin: HOTP hardware tokens from a PSKC file that names no
// user, given to users with users assign, log in through real PAM with
// oathtool's codes: the look-ahead of 10, a replay refused, a resync with
// two consecutive codes, and an expired key refused with its date.
func TestHOTPLogin(t *testing.T) {
	requirePamtester(t)
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing (make deps installs it)")
	}
	c := newCollector(t, "--login-delay", "0s")
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	c.waitReported(t, id, 10*time.Second)
	eventually(t, 10*time.Second, func() error { _, err := os.Stat(a.pamSocket); return err })
	service := pamService(t, a.pamSocket)

	secret := []byte("12345678901234567890")
	const hexSecret = "3132333435363738393031323334353637383930"
	soon := time.Now().Add(8 * time.Second).Truncate(time.Second)
	file := filepath.Join(t.TempDir(), "hotp.xml")
	hotpPSKC(t, file, secret, map[string]time.Time{"HW-1": time.Now().Add(365 * 24 * time.Hour), "HW-2": soon})

	var res mnguardv1.ImportTokensResponse
	c.ctlJSON(t, &res, "users", "import", file)
	if res.GetTokens() != 2 || res.GetUnassigned() != 2 || res.GetHotp() != 2 {
		t.Fatalf("import: %v", &res)
	}
	// Unassigned: nobody logs in with them.
	codes := hotpCodes(t, hexSecret, 0, 1100)
	login(t, service, "hiro", codes[0], pamAuthErr)
	var u mnguardv1.AssignTokenResponse
	c.ctlJSON(t, &u, "users", "assign", "HW-1", "hiro")
	c.ctlJSON(t, &u, "users", "assign", "HW-2", "kaito")
	if u.GetUser().GetKind() != "hotp" || u.GetUser().GetNotAfter().AsTime().Unix() != soon.Unix() {
		t.Fatalf("assigned HW-2: %v", u.GetUser())
	}

	// Counter 0; the 4th press (counter 3) is within the look-ahead.
	login(t, service, "hiro", codes[3], pamOK)
	login(t, service, "hiro", codes[3], pamAuthErr) // replay
	login(t, service, "hiro", codes[2], pamAuthErr) // older: replay
	login(t, service, "hiro", codes[15], pamAuthErr)
	login(t, service, "hiro", codes[14], pamOK) // counter 4 + 10
	if got := c.user(t, "hiro"); got.GetCounter() != 15 || got.GetFailures() != 0 {
		t.Fatalf("after counter 14: %v", got)
	}
	// Pressed 800 times away from the terminal: out of the window until
	// the helpdesk resyncs with two consecutive codes.
	login(t, service, "hiro", codes[815], pamAuthErr)
	if _, errOut, code := c.ctl(t, "users", "resync", "hiro", codes[815], codes[817]); code != 1 || !strings.Contains(errOut, "not consecutive codes") {
		t.Fatalf("resync with non-consecutive codes: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.ctl(t, "users", "resync", "hiro", codes[816], codes[817]); code != 0 {
		t.Fatalf("resync: exit %d: %s", code, errOut)
	}
	login(t, service, "hiro", codes[817], pamAuthErr) // used by the resync
	login(t, service, "hiro", codes[818], pamOK)

	// kaito's key expires: before, a code passes; after, the login is
	// refused with the date, whatever the code.
	login(t, service, "kaito", codes[0], pamOK)
	time.Sleep(time.Until(soon) + time.Second)
	out, _ := login(t, service, "kaito", codes[1], pamAuthErr)
	if !strings.Contains(out, "expired on "+soon.UTC().Format(time.DateOnly)) {
		t.Errorf("expired token's login does not say so:\n%s", out)
	}
	if got := c.user(t, "kaito"); got.GetCounter() != 1 || got.GetFailures() != 0 {
		t.Errorf("expired login moved the counter or counted a failure: %v", got)
	}
}
