package exemption

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Wire-format vectors. Agents in the field keep the tokens and answer the
// codes of collectors newer than themselves: a change of the token's
// layout (field numbers, the signing context, the envelope) or of the
// offline codes' derivation must fail here, not in a terminal. The expected
// values were computed independently of this code (Python: hand-written
// protobuf encoding, the cryptography package's Ed25519, hmac/hashlib),
// from the key and claims below.
var (
	vectorSeed     = seq(32) // Ed25519 seed 00 01 … 1f
	vectorKey      = seq(32) // offline key 00 01 … 1f
	vectorTerminal = "3f1c1b9e-7a52-4c0e-9d6b-2f8a1e5c4b01"
	vectorDevice   = &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"}
)

const (
	vectorPayloadHex = "0a0b65782d766563746f722d31122433663163316239652d376135322d346330652d396436622d3266386131653563346230311a220a04303738311204353538311a143443353330303031323330383135313137343332220608a0e39ad8062a0608b0ff9ad80630901c3a1568656c706465736b2d31202868656c706465736b294210636f707920746865206d696e757465734a06494e432d34325a060882e39ad806"
	// vectorToken is the SignedExemption, marshalled and base64-encoded as
	// the collector stores it and the agent keeps it in exemptions.json.
	vectorToken = "CqMBCgtleC12ZWN0b3ItMRIkM2YxYzFiOWUtN2E1Mi00YzBlLTlkNmItMmY4YTFlNWM0YjAxGiIKBDA3ODESBDU1ODEaFDRDNTMwMDAxMjMwODE1MTE3NDMyIgYIoOOa2AYqBgiw/5rYBjCQHDoVaGVscGRlc2stMSAoaGVscGRlc2spQhBjb3B5IHRoZSBtaW51dGVzSgZJTkMtNDJaBgiC45rYBhJACOnrGSmUcpIgOpmHZdeJvuaKKoxumvWN5GquhiDam+xxao1/ZFnnH/8AFpt8ywFnmszK+m13bTT5zxueIfJTAQ=="
	// An offline exemption: 30-bit nonce 0x2345678, one hour, the device's
	// tag 1648; the helpdesk's answer under vectorKey.
	vectorChallenge = "138NKR31KG"
	vectorResponse  = "GF9A70K1NF"
)

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func vectorClaims() *mnguardv1.Exemption {
	t := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	return &mnguardv1.Exemption{
		Id: "ex-vector-1", TerminalId: vectorTerminal, Device: vectorDevice,
		NotBefore: timestamppb.New(t), NotAfter: timestamppb.New(t.Add(time.Hour)), DurationSeconds: 3600,
		Issuer: "helpdesk-1 (helpdesk)", Reason: "copy the minutes", Ticket: "INC-42",
		IssuedAt: timestamppb.New(t.Add(-30 * time.Second)),
	}
}

// TestTokenWireFormat: the collector's Sign gives exactly the pinned token
// for the pinned claims, and the pinned token, as stored, verifies and
// parses to those claims.
func TestTokenWireFormat(t *testing.T) {
	key := ed25519.NewKeyFromSeed(vectorSeed)
	se, err := Sign(key, vectorClaims())
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(se.GetPayload()); got != vectorPayloadHex {
		t.Errorf("payload layout changed:\n got %s\nwant %s", got, vectorPayloadHex)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(se)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(raw); got != vectorToken {
		t.Errorf("token changed:\n got %s\nwant %s", got, vectorToken)
	}

	// An agent holding the pinned token: it verifies under the public key
	// and gives back every claim.
	stored, err := base64.StdEncoding.DecodeString(vectorToken)
	if err != nil {
		t.Fatal(err)
	}
	var kept mnguardv1.SignedExemption
	if err := proto.Unmarshal(stored, &kept); err != nil {
		t.Fatal(err)
	}
	e, err := Verify(key.Public().(ed25519.PublicKey), &kept, vectorTerminal, time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("the pinned token does not verify: %v", err)
	}
	if want := vectorClaims(); !proto.Equal(e, want) {
		t.Errorf("the pinned token parses to\n%v\nwant\n%v", e, want)
	}
	if FormatDevice(e.GetDevice()) != "0781:5581:4C530001230815117432" || e.GetNotAfter().AsTime() != time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC) {
		t.Errorf("claims: device %s, not after %v", FormatDevice(e.GetDevice()), e.GetNotAfter().AsTime())
	}
	// One flipped bit anywhere in the signed part is refused.
	kept.Payload[len(kept.Payload)/2] ^= 1
	if _, err := Verify(key.Public().(ed25519.PublicKey), &kept, vectorTerminal, time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC)); err == nil {
		t.Error("a token with a flipped payload bit verifies")
	}
}

// TestOfflineExemptionWireFormat: the pinned challenge decodes to its
// duration and device tag, and the pinned key gives the pinned response.
func TestOfflineExemptionWireFormat(t *testing.T) {
	c, err := ParseChallenge("138nk-r31kg")
	if err != nil {
		t.Fatal(err)
	}
	if c.Text != vectorChallenge || c.Duration != time.Hour || c.Tag != 1648 || DeviceTag(vectorDevice) != 1648 {
		t.Errorf("challenge %s: %+v, device tag %d; want 1h, tag 1648", vectorChallenge, c, DeviceTag(vectorDevice))
	}
	got, err := ResponseCode(vectorKey, vectorTerminal, vectorChallenge, vectorDevice)
	if err != nil {
		t.Fatal(err)
	}
	if got != vectorResponse {
		t.Errorf("response to %s: %s, want %s", vectorChallenge, got, vectorResponse)
	}
	if ok, err := VerifyResponse(vectorKey, vectorTerminal, vectorChallenge, vectorDevice, "gf9a7-0k1nf"); !ok || err != nil {
		t.Errorf("the pinned response as typed: %v, %v", ok, err)
	}
}
