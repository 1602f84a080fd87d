package seeds

import (
	"context"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"hash"
	"sync/atomic"
)

// pbkdf2CheckEvery is how many PBKDF2 iterations run between two looks at
// the context: about a millisecond of HMAC-SHA1.
const pbkdf2CheckEvery = 1024

// pbkdf2Runs counts key derivations, for tests.
var pbkdf2Runs atomic.Int64

// pbkdf2Key derives keyLen bytes from password and salt with PBKDF2
// (RFC 8018 §5.2) and HMAC over h as the PRF. Unlike crypto/pbkdf2, it
// stops when ctx is done, returning ctx's error: an import that is
// cancelled does not keep a core busy.
func pbkdf2Key(ctx context.Context, h func() hash.Hash, password string, salt []byte, iter, keyLen int) ([]byte, error) {
	if iter < 1 || keyLen < 1 {
		return nil, errors.New("PBKDF2: iterations and key length must be positive")
	}
	pbkdf2Runs.Add(1)
	prf := hmac.New(h, []byte(password))
	hLen := prf.Size()
	blocks := (keyLen + hLen - 1) / hLen
	dk := make([]byte, 0, blocks*hLen)
	u := make([]byte, 0, hLen)
	var idx [4]byte
	for block := 1; block <= blocks; block++ {
		// T_i = U_1 ^ U_2 ^ ... ^ U_c, U_1 = PRF(P, S || INT(i)),
		// U_j = PRF(P, U_{j-1}).
		prf.Reset()
		prf.Write(salt)
		binary.BigEndian.PutUint32(idx[:], uint32(block))
		prf.Write(idx[:])
		dk = prf.Sum(dk)
		t := dk[len(dk)-hLen:]
		u = append(u[:0], t...)
		for n := 2; n <= iter; n++ {
			if n%pbkdf2CheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			prf.Reset()
			prf.Write(u)
			u = prf.Sum(u[:0])
			for i, b := range u {
				t[i] ^= b
			}
		}
	}
	return dk[:keyLen], nil
}
