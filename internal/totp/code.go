package totp

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrMalformedCode is wrapped by every error [CheckCode] returns.
var ErrMalformedCode = errors.New("totp: malformed code")

// CheckCode reports whether code is exactly p.Digits ASCII digits (6 when
// p.Digits is zero). Nothing is trimmed. The error wraps [ErrMalformedCode]
// and never echoes the code.
func CheckCode(code string, p Params) error {
	p = p.WithDefaults()
	want := int(p.Digits)
	if code == "" {
		return fmt.Errorf("%w: empty", ErrMalformedCode)
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < '0' || c > '9' {
			return fmt.Errorf("%w: character %d is not a digit 0-9", ErrMalformedCode, utf8.RuneCountInString(code[:i])+1)
		}
	}
	if len(code) != want {
		return fmt.Errorf("%w: %d digits, want %d", ErrMalformedCode, len(code), want)
	}
	return nil
}
