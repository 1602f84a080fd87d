package snapshot

import (
	"bytes"
	"testing"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestFingerprint(t *testing.T) {
	base := func() *mnguardv1.Posture {
		return &mnguardv1.Posture{
			CollectedAt:   timestamppb.Now(),
			UptimeSeconds: 10,
			Host:          &mnguardv1.HostFacts{Hostname: "t1"},
			Interfaces:    []*mnguardv1.NetworkInterface{{Name: "lo", Addrs: []string{"127.0.0.1/8"}}},
		}
	}
	a := Fingerprint(base())
	if len(a) != 32 {
		t.Fatalf("fingerprint length %d, want 32", len(a))
	}
	b := base()
	b.UptimeSeconds = 99999
	b.CollectedAt = nil
	if !bytes.Equal(a, Fingerprint(b)) {
		t.Error("uptime and collection time changed the fingerprint")
	}
	c := base()
	c.Interfaces[0].Addrs = append(c.Interfaces[0].Addrs, "192.0.2.1/24")
	if bytes.Equal(a, Fingerprint(c)) {
		t.Error("a new address did not change the fingerprint")
	}
	d := base()
	d.UsbDevices = []*mnguardv1.UsbDevice{{VendorId: "0781", ProductId: "5567"}}
	if bytes.Equal(a, Fingerprint(d)) {
		t.Error("a new USB device did not change the fingerprint")
	}
	if Fingerprint(nil) != nil {
		t.Error("nil posture has a fingerprint")
	}
}
