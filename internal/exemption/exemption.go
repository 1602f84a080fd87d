// Package exemption is shared by the collector and the agent: device
// identities, the signed exemption tokens the collector pushes, and the
// challenge/response codes the helpdesk reads out to a terminal that cannot
// reach the collector.
package exemption

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
)

// Limits.
const (
	// MaxDuration is the longest exemption any token may carry; the
	// collector's policy is usually lower (8 h by default).
	MaxDuration = 24 * time.Hour
	// ClockSkew is how far before its not-before an exemption is accepted.
	ClockSkew = 5 * time.Minute
	// MaxSerial is the longest serial number, in bytes.
	MaxSerial = 126
	maxText   = 512
	maxID     = 64
	signCtx   = "mnguard exemption v1\x00"
)

// Errors of Verify; each wraps ErrInvalid.
var (
	ErrInvalid       = errors.New("invalid exemption")
	ErrBadSignature  = fmt.Errorf("%w: signature does not verify with the collector's key", ErrInvalid)
	ErrWrongTerminal = fmt.Errorf("%w: issued for another terminal", ErrInvalid)
	ErrExpired       = fmt.Errorf("%w: expired", ErrInvalid)
	ErrNotYetValid   = fmt.Errorf("%w: not yet valid", ErrInvalid)
)

// ParseDevice parses "VID:PID:SERIAL" (four hex digits each for vendor and
// product; the serial is everything after the second colon and may be
// empty: "VID:PID" or "VID:PID:").
func ParseDevice(s string) (*mnguardv1.DeviceIdentity, error) {
	vid, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("device %q: want VID:PID:SERIAL, e.g. 0781:5581:4C530001230815117432", clip(s))
	}
	pid, serial, _ := strings.Cut(rest, ":")
	d := &mnguardv1.DeviceIdentity{VendorId: strings.ToLower(vid), ProductId: strings.ToLower(pid), Serial: serial}
	if err := ValidateDevice(d); err != nil {
		return nil, err
	}
	return d, nil
}

// ValidateDevice checks a device identity's fields.
func ValidateDevice(d *mnguardv1.DeviceIdentity) error {
	if d == nil {
		return errors.New("device: missing")
	}
	for _, f := range []struct{ name, v string }{{"vendor ID", d.GetVendorId()}, {"product ID", d.GetProductId()}} {
		if len(f.v) != 4 || strings.Trim(f.v, "0123456789abcdef") != "" {
			return fmt.Errorf("device: %s %q: want four lowercase hex digits", f.name, clip(f.v))
		}
	}
	if len(d.GetSerial()) > MaxSerial {
		return fmt.Errorf("device: serial is %d bytes, more than %d", len(d.GetSerial()), MaxSerial)
	}
	for i := 0; i < len(d.GetSerial()); i++ {
		if c := d.GetSerial()[i]; c < 0x21 || c > 0x7e {
			return errors.New("device: serial may hold only printable ASCII without spaces")
		}
	}
	return nil
}

// FormatDevice is the inverse of ParseDevice.
func FormatDevice(d *mnguardv1.DeviceIdentity) string {
	return d.GetVendorId() + ":" + d.GetProductId() + ":" + d.GetSerial()
}

// SameDevice reports whether two identities name the same device (or, for
// devices without a serial, the same model).
func SameDevice(a, b *mnguardv1.DeviceIdentity) bool {
	return a.GetVendorId() == b.GetVendorId() && a.GetProductId() == b.GetProductId() && a.GetSerial() == b.GetSerial()
}

// Validate checks an exemption's fields (not its signature, terminal or
// time).
func Validate(e *mnguardv1.Exemption) error {
	switch {
	case e.GetId() == "" || len(e.GetId()) > maxID:
		return fmt.Errorf("%w: id missing or longer than %d bytes", ErrInvalid, maxID)
	case e.GetTerminalId() == "" || len(e.GetTerminalId()) > maxID:
		return fmt.Errorf("%w: terminal ID missing or longer than %d bytes", ErrInvalid, maxID)
	case e.GetNotBefore() == nil || e.GetNotAfter() == nil:
		return fmt.Errorf("%w: validity times missing", ErrInvalid)
	case len(e.GetIssuer()) > maxText || len(e.GetReason()) > maxText || len(e.GetTicket()) > maxText:
		return fmt.Errorf("%w: issuer, reason or ticket longer than %d bytes", ErrInvalid, maxText)
	}
	if err := ValidateDevice(e.GetDevice()); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if e.GetDevice().GetSerial() == "" && !e.GetAllowNoSerial() {
		return fmt.Errorf("%w: device without a serial number and no recorded override", ErrInvalid)
	}
	nb, na := e.GetNotBefore().AsTime(), e.GetNotAfter().AsTime()
	d := time.Duration(e.GetDurationSeconds()) * time.Second
	switch {
	case !na.After(nb):
		return fmt.Errorf("%w: not_after is not after not_before", ErrInvalid)
	case d <= 0 || d > MaxDuration:
		return fmt.Errorf("%w: duration %s outside 1s..%s", ErrInvalid, d, MaxDuration)
	case na.Sub(nb) != d:
		return fmt.Errorf("%w: duration %s does not match the validity period %s", ErrInvalid, d, na.Sub(nb))
	}
	return nil
}

// Sign validates e and returns it signed with the collector's key.
func Sign(key ed25519.PrivateKey, e *mnguardv1.Exemption) (*mnguardv1.SignedExemption, error) {
	if err := Validate(e); err != nil {
		return nil, err
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("sign exemption: %w", err)
	}
	return &mnguardv1.SignedExemption{Payload: payload, Signature: ed25519.Sign(key, signed(payload))}, nil
}

func signed(payload []byte) []byte {
	return append([]byte(signCtx), payload...)
}

// Verify checks the token's signature with the collector's public key, then
// its fields, that it is for terminalID, and that now is within its
// validity (with ClockSkew before not-before). Errors wrap ErrInvalid.
func Verify(pub ed25519.PublicKey, se *mnguardv1.SignedExemption, terminalID string, now time.Time) (*mnguardv1.Exemption, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: no usable verification key (%d bytes)", ErrInvalid, len(pub))
	}
	if se == nil || len(se.GetSignature()) != ed25519.SignatureSize || !ed25519.Verify(pub, signed(se.GetPayload()), se.GetSignature()) {
		return nil, ErrBadSignature
	}
	e, err := parsePayload(se.GetPayload())
	if err != nil {
		return nil, err
	}
	if e.GetTerminalId() != terminalID {
		return nil, ErrWrongTerminal
	}
	if !now.Before(e.GetNotAfter().AsTime()) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, e.GetNotAfter().AsTime().Format(time.RFC3339))
	}
	if now.Add(ClockSkew).Before(e.GetNotBefore().AsTime()) {
		return nil, fmt.Errorf("%w before %s", ErrNotYetValid, e.GetNotBefore().AsTime().Format(time.RFC3339))
	}
	return e, nil
}

// parsePayload decodes and validates a token's payload, the part the
// signature covers; Verify calls it once the signature holds. Errors wrap
// ErrInvalid.
func parsePayload(payload []byte) (*mnguardv1.Exemption, error) {
	e := &mnguardv1.Exemption{}
	if err := proto.Unmarshal(payload, e); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalid, err)
	}
	if err := Validate(e); err != nil {
		return nil, err
	}
	return e, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
