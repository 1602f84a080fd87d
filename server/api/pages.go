package api

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every list of AdminService answers a page at a time (AIP-158): a
// request's page_size (0: the list's default, more than maxPageSize
// refused) and page_token, an answer's next_page_token. A page token is
// the sort key of the last item of the page before (a keyset, never an
// offset), bound to the list and to the request's filters by a digest of
// them, and authenticated by an HMAC under a key derived from the
// exemption signing key, which every replica of a collector shares: a
// token altered, forged, of another list or sent with other filters is
// refused with InvalidArgument before anything reads the store.

// Page sizes.
const (
	defaultPageSize = 500
	maxPageSize     = 1000
	// maxPageTokenLen bounds a page token before decoding; the longest
	// key (a terminal's agent version, host name and ID) is far shorter.
	maxPageTokenLen = 2048
	// maxKeyParts and maxKeyString bound the parts of a decoded key.
	maxKeyParts  = 8
	maxKeyString = 512
)

// pageList names the list a token belongs to.
type pageList byte

const (
	pageTerminals pageList = 1 + iota
	pageEnrollmentTokens
	pageEvents
	pageUsers
	pageHardwareTokens
	pageExemptions
	pageOperators
	pageAudit
)

const (
	pageTokenVersion = 1
	pageDigestLen    = 16
	pageMACLen       = 16
	// pageHeaderLen: version, list, filter digest.
	pageHeaderLen = 2 + pageDigestLen
)

// pageScope is what a token is bound to: its list and the request's
// filters, as a digest.
type pageScope struct {
	list   pageList
	digest [pageDigestLen]byte
}

// newPageScope binds a list to the request's filters, each given as one
// string (length-prefixed, so no two different filter sets collide).
func newPageScope(list pageList, filters ...string) pageScope {
	h := sha256.New()
	h.Write([]byte{byte(list)})
	var n [binary.MaxVarintLen64]byte
	for _, f := range filters {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		h.Write([]byte(f))
	}
	s := pageScope{list: list}
	copy(s.digest[:], h.Sum(nil))
	return s
}

// pageKeyFrom derives the token MAC key from the exemption signing key, or
// when the collector has none, makes a random one: tokens then hold only
// at this process.
func pageKeyFrom(signer ed25519.PrivateKey) []byte {
	if len(signer) == ed25519.PrivateKeySize {
		h := sha256.New()
		h.Write([]byte("mnguard page token key v1\x00"))
		h.Write(signer.Seed())
		return h.Sum(nil)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(fmt.Sprintf("page token key: %v", err)) // crypto/rand does not fail on Linux or Windows
	}
	return k
}

// pageTokenKey is the service's MAC key, derived once.
func (a *AdminService) pageTokenKey() []byte {
	a.pageKeyOnce.Do(func() { a.pageKey = pageKeyFrom(a.s.cfg.ExemptionSigner) })
	return a.pageKey
}

// encodePageToken makes the token that starts a page after k.
func encodePageToken(key []byte, sc pageScope, k store.PageKey) string {
	b := make([]byte, 0, 64)
	b = append(b, pageTokenVersion, byte(sc.list))
	b = append(b, sc.digest[:]...)
	b = appendPageKey(b, k)
	m := hmac.New(sha256.New, key)
	m.Write(b)
	b = m.Sum(b)[:len(b)+pageMACLen]
	return base64.RawURLEncoding.EncodeToString(b)
}

// appendPageKey appends the encoding of k: the count of integers, each
// as a varint, the count of strings, each length-prefixed.
func appendPageKey(b []byte, k store.PageKey) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.Ints)))
	for _, v := range k.Ints {
		b = binary.AppendVarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(k.Strings)))
	for _, s := range k.Strings {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// errPageToken is what every refused token answers, with the reason.
func errPageToken(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "page_token: "+format, args...)
}

// parsePageToken checks a page token against the list and filters of the
// request it came with and returns its key; "" is the first page (nil).
func parsePageToken(key []byte, sc pageScope, tok string) (*store.PageKey, error) {
	if tok == "" {
		return nil, nil
	}
	if len(tok) > maxPageTokenLen {
		return nil, errPageToken("longer than %d characters: not a page token", maxPageTokenLen)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	// The decoder skips line breaks: a token is only the one issued, as
	// it was, not another spelling of its bytes.
	if err == nil && base64.RawURLEncoding.EncodeToString(b) != tok {
		err = errors.New("not canonical")
	}
	if err != nil {
		return nil, errPageToken("not a page token (want the next_page_token of the previous page, as it was)")
	}
	if len(b) < pageHeaderLen+pageMACLen || b[0] != pageTokenVersion {
		return nil, errPageToken("not a page token of this collector version")
	}
	body, mac := b[:len(b)-pageMACLen], b[len(b)-pageMACLen:]
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil)[:pageMACLen], mac) {
		return nil, errPageToken("damaged, or not issued by this collector")
	}
	if pageList(body[1]) != sc.list {
		return nil, errPageToken("belongs to another list")
	}
	if !hmac.Equal(body[2:pageHeaderLen], sc.digest[:]) {
		return nil, errPageToken("was issued for other filters or another sort: send the same ones as for the first page")
	}
	k, err := decodePageKey(body[pageHeaderLen:])
	if err != nil {
		return nil, errPageToken("%v", err)
	}
	return &k, nil
}

// decodePageKey reads the key part of a token, strictly: bounded counts
// and lengths, nothing left over, and only the one encoding of the key
// (no padded varints).
func decodePageKey(b []byte) (store.PageKey, error) {
	k, err := decodePageKeyParts(b)
	if err == nil && string(appendPageKey(nil, k)) != string(b) {
		return store.PageKey{}, errors.New("malformed key")
	}
	return k, err
}

func decodePageKeyParts(b []byte) (store.PageKey, error) {
	var k store.PageKey
	bad := errors.New("malformed key")
	n, l := binary.Uvarint(b)
	if l <= 0 || n > maxKeyParts {
		return k, bad
	}
	b = b[l:]
	for range n {
		v, l := binary.Varint(b)
		if l <= 0 {
			return k, bad
		}
		k.Ints = append(k.Ints, v)
		b = b[l:]
	}
	n, l = binary.Uvarint(b)
	if l <= 0 || n > maxKeyParts {
		return k, bad
	}
	b = b[l:]
	for range n {
		sl, l := binary.Uvarint(b)
		if l <= 0 || sl > maxKeyString || sl > uint64(len(b)-l) {
			return k, bad
		}
		k.Strings = append(k.Strings, string(b[l:l+int(sl)]))
		b = b[l+int(sl):]
	}
	if len(b) != 0 {
		return k, bad
	}
	return k, nil
}

// pageSize is the size of a page: page_size, else the legacy limit (more
// than maxPageSize served as pages of maxPageSize), else def.
func pageSize(size, legacyLimit uint32, def int) (int, error) {
	switch {
	case size > maxPageSize:
		return 0, status.Errorf(codes.InvalidArgument, "page_size: at most %d (got %d); follow next_page_token for the rest", maxPageSize, size)
	case size > 0:
		return int(size), nil
	case legacyLimit > 0:
		return min(int(legacyLimit), maxPageSize), nil
	}
	return def, nil
}

// pageStart checks a request's paging fields: its page size and the key
// its token starts after (nil for the first page).
func (a *AdminService) pageStart(sc pageScope, size, legacyLimit uint32, def int, tok string) (int, *store.PageKey, error) {
	n, err := pageSize(size, legacyLimit, def)
	if err != nil {
		return 0, nil, err
	}
	k, err := parsePageToken(a.pageTokenKey(), sc, tok)
	return n, k, err
}

// nextToken is the next_page_token after k; "" when there is no next
// page.
func (a *AdminService) nextToken(sc pageScope, k *store.PageKey) string {
	if k == nil {
		return ""
	}
	return encodePageToken(a.pageTokenKey(), sc, *k)
}

// timeFilter is a time filter as a scope part.
func timeFilter(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmt.Sprint(t.UnixNano())
}

// pager is what the list handlers need of the store beyond store.Store:
// keyset pages (store.DB has them).
type pager interface {
	TerminalKeyPage(ctx context.Context, f store.TerminalFilter, after *store.PageKey, limit int) ([]store.TerminalSummary, *store.PageKey, int, error)
	ExemptionPage(ctx context.Context, terminalID string, activeAt time.Time, after *store.PageKey, limit int) ([]store.Exemption, *store.PageKey, error)
	EnrollmentTokenPage(ctx context.Context, after *store.PageKey, limit int) ([]store.EnrollmentToken, *store.PageKey, error)
	UserPage(ctx context.Context, after *store.PageKey, limit int) ([]store.User, *store.PageKey, error)
	HardwareTokenPage(ctx context.Context, after *store.PageKey, limit int) ([]store.HardwareToken, *store.PageKey, error)
	OperatorPage(ctx context.Context, after *store.PageKey, limit int) ([]store.Operator, *store.PageKey, error)
}

// pages is the store's pager, or Unimplemented for a store without one.
func (a *AdminService) pages() (pager, error) {
	p, ok := a.s.cfg.Store.(pager)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this collector's store cannot list in pages")
	}
	return p, nil
}
