package totp

import (
	"fmt"

	"github.com/pquerna/otp"
)

// Defaults used for zero fields of [Params]; they are what authenticator
// apps assume when an otpauth URL says nothing.
const (
	DefaultAlgorithm = otp.AlgorithmSHA1
	DefaultDigits    = otp.DigitsSix
	DefaultPeriod    = 30
)

// Bounds accepted by [Params.Validate].
const (
	MinPeriod = 15
	MaxPeriod = 120
)

// Params are the TOTP parameters of one token. The zero value means the
// defaults: SHA-1, 6 digits, 30 seconds.
type Params struct {
	// Algorithm is the HMAC hash: otp.AlgorithmSHA1 (default),
	// otp.AlgorithmSHA256 or otp.AlgorithmSHA512.
	Algorithm otp.Algorithm
	// Digits is the code length: 6 (default, when zero) or 8.
	Digits otp.Digits
	// Period is the time step in seconds, MinPeriod to MaxPeriod; 30 when
	// zero.
	Period uint
}

// DefaultParams returns SHA-1, 6 digits, 30 seconds.
func DefaultParams() Params {
	return Params{Algorithm: DefaultAlgorithm, Digits: DefaultDigits, Period: DefaultPeriod}
}

// WithDefaults returns p with zero Digits and Period replaced by their
// defaults. (The zero Algorithm already is SHA-1.)
func (p Params) WithDefaults() Params {
	if p.Digits == 0 {
		p.Digits = DefaultDigits
	}
	if p.Period == 0 {
		p.Period = DefaultPeriod
	}
	return p
}

// Validate reports whether p, with defaults applied, describes a token this
// package accepts. The error names the offending field.
func (p Params) Validate() error {
	p = p.WithDefaults()
	switch p.Algorithm {
	case otp.AlgorithmSHA1, otp.AlgorithmSHA256, otp.AlgorithmSHA512:
	default:
		// otp.Algorithm.String panics on unknown values; print the number.
		return fmt.Errorf("totp: params: algorithm %d: must be SHA1, SHA256 or SHA512", int(p.Algorithm))
	}
	if p.Digits != otp.DigitsSix && p.Digits != otp.DigitsEight {
		return fmt.Errorf("totp: params: digits %d: must be 6 or 8", int(p.Digits))
	}
	if p.Period < MinPeriod || p.Period > MaxPeriod {
		return fmt.Errorf("totp: params: period %d s: must be %d to %d s", p.Period, MinPeriod, MaxPeriod)
	}
	return nil
}

// maxStep is the largest time step this package handles for p: one whose
// start, in Unix seconds, is still exact as a float64 (pquerna/otp computes
// the counter through float64). That is some 285 million years away.
func (p Params) maxStep() int64 {
	return (1<<53 - 1) / int64(p.Period)
}
