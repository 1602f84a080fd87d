package pki

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// PinPrefix starts every CA pin.
const PinPrefix = "sha256:"

// Pin returns the pin of a certificate: "sha256:" followed by the lowercase
// hex SHA-256 of its DER encoding.
func Pin(certDER []byte) string {
	sum := sha256.Sum256(certDER)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin normalizes a pin typed or pasted by an operator and returns it in
// the canonical form produced by [Pin]. It trims surrounding space and
// accepts upper- or lowercase hex, with or without ':' between byte pairs
// ("sha256:AB:CD:..."), as printed by openssl and other tools.
func ParsePin(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) < len(PinPrefix) || !strings.EqualFold(s[:len(PinPrefix)], PinPrefix) {
		if h, err := parsePinHex(s); err == nil {
			return "", fmt.Errorf("parse CA pin: missing %q prefix (did you mean %q?)", PinPrefix, PinPrefix+h)
		}
		return "", fmt.Errorf("parse CA pin %q: missing %q prefix", abbrev(s), PinPrefix)
	}
	h, err := parsePinHex(s[len(PinPrefix):])
	if err != nil {
		return "", fmt.Errorf("parse CA pin %q: %w", abbrev(s), err)
	}
	return PinPrefix + h, nil
}

// parsePinHex parses the hex part of a pin, plain or colon-separated, and
// returns it as 64 lowercase hex digits.
func parsePinHex(s string) (string, error) {
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		for i, p := range parts {
			if len(p) != 2 {
				return "", fmt.Errorf("colon-separated fingerprint must have two hex digits per byte, byte %d is %q", i+1, abbrev(p))
			}
		}
		s = strings.Join(parts, "")
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return "", fmt.Errorf("invalid hex digit %q at offset %d", s[i], i)
		}
	}
	if len(s) != 2*sha256.Size {
		return "", fmt.Errorf("fingerprint has %d hex digits, want %d (a SHA-256)", len(s), 2*sha256.Size)
	}
	return strings.ToLower(s), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// abbrev shortens s for error messages.
func abbrev(s string) string {
	const maxLen = 120
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}
