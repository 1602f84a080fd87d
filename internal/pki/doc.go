// Package pki holds the certificate helpers shared by agent, server and CLI:
// CA pins, keys, CSRs and pinned TLS.
package pki
