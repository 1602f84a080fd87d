package totp

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/pquerna/otp"
)

// URL returns the otpauth://totp/ URL that enrolls secret in an
// authenticator app (Google's Key URI format): the label
// "issuer:account", and the secret, issuer, algorithm, digits and period
// parameters, all escaped. Zero fields of p are replaced by their defaults;
// p should have passed [Params.Validate].
//
// The Key URI format allows no colon in the issuer or account name. When
// the issuer contains one, or is empty, the label is the account name
// alone; the issuer parameter always carries the issuer exactly.
func URL(issuer, account string, secret []byte, p Params) string {
	p = p.WithDefaults()
	label := labelEscape(account)
	if issuer != "" && !strings.Contains(issuer, ":") {
		label = labelEscape(issuer) + ":" + label
	}
	v := url.Values{}
	v.Set("secret", EncodeSecret(secret))
	if issuer != "" {
		v.Set("issuer", issuer)
	}
	v.Set("algorithm", algorithmName(p))
	v.Set("digits", strconv.Itoa(int(p.Digits)))
	v.Set("period", strconv.FormatUint(uint64(p.Period), 10))
	// url.Values.Encode writes spaces as '+'; some authenticator apps
	// show them literally. %20 is correct in both places.
	return "otpauth://totp/" + label + "?" + strings.ReplaceAll(v.Encode(), "+", "%20")
}

// labelEscape escapes one part of the label: as a path segment, and also
// '+' (some apps read it as a space) and ':' (the label's separator).
func labelEscape(s string) string {
	return strings.NewReplacer("+", "%2B", ":", "%3A").Replace(url.PathEscape(s))
}

// algorithmName is otp.Algorithm.String without its panic on unknown values.
func algorithmName(p Params) string {
	switch p.Algorithm {
	case otp.AlgorithmSHA1, otp.AlgorithmSHA256, otp.AlgorithmSHA512, otp.AlgorithmMD5:
		return p.Algorithm.String()
	}
	return strconv.Itoa(int(p.Algorithm))
}
