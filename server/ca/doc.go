// Package ca is the collector's certificate authority: it issues, renews and
// revokes agent certificates.
//
// The CA lives in the server's data directory as ca.crt (PEM certificate)
// and ca.key (PKCS#8 PEM private key, mode 0600). Revocation is recorded in
// the store, keyed by [SerialHex]; this package only issues.
package ca
