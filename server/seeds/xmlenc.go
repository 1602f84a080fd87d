package seeds

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// XML namespaces used by PSKC files.
const (
	nsPSKC   = "urn:ietf:params:xml:ns:keyprov:pskc"
	nsXenc   = "http://www.w3.org/2001/04/xmlenc#"
	nsDS     = "http://www.w3.org/2000/09/xmldsig#"
	nsXenc11 = "http://www.w3.org/2009/xmlenc11#"
	nsPKCS5  = "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
)

// cbcKeySizes maps the supported XML Encryption block ciphers to their key
// sizes.
var cbcKeySizes = map[string]int{
	nsXenc + "aes128-cbc": 16,
	nsXenc + "aes192-cbc": 24,
	nsXenc + "aes256-cbc": 32,
}

// hmacHashes maps the supported MAC (and PBKDF2 PRF) algorithms to hashes.
var hmacHashes = map[string]func() hash.Hash{
	nsDS + "hmac-sha1": sha1.New,
	// Some vendors write HMAC-SHA1 under the xmldsig-more address of the
	// SHA-2 HMACs.
	"http://www.w3.org/2001/04/xmldsig-more#hmac-sha1":   sha1.New,
	"http://www.w3.org/2001/04/xmldsig-more#hmac-sha224": sha256.New224,
	"http://www.w3.org/2001/04/xmldsig-more#hmac-sha256": sha256.New,
	"http://www.w3.org/2001/04/xmldsig-more#hmac-sha384": sha512.New384,
	"http://www.w3.org/2001/04/xmldsig-more#hmac-sha512": sha512.New,
}

// validKeySize reports whether n is an AES key size.
func validKeySize(n int) bool {
	return n == 16 || n == 24 || n == 32
}

// decodeBase64 decodes standard base64, ignoring the white space XML
// documents wrap it in. Errors do not quote the input.
func decodeBase64(v string) ([]byte, error) {
	v = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, v)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, errors.New("not valid base64")
	}
	return b, nil
}

// encrypted is an xenc EncryptedValue or MACKey: the cipher and the
// CipherValue (IV followed by the ciphertext).
type encrypted struct {
	keySize int
	data    []byte
}

// parseEncrypted reads xenc:EncryptionMethod and xenc:CipherData from n.
func parseEncrypted(n *node) (encrypted, error) {
	m, err := n.child(nsXenc, "EncryptionMethod")
	if err != nil {
		return encrypted{}, err
	}
	if m == nil {
		return encrypted{}, errors.New("no xenc:EncryptionMethod")
	}
	alg := m.attrValue("Algorithm")
	size, ok := cbcKeySizes[alg]
	if !ok {
		return encrypted{}, fmt.Errorf("encryption algorithm %q: %w (aes128-cbc, aes192-cbc and aes256-cbc are)", truncate(alg), errors.ErrUnsupported)
	}
	cd, err := n.child(nsXenc, "CipherData")
	if err != nil {
		return encrypted{}, err
	}
	cv, err := cd.child(nsXenc, "CipherValue")
	if err != nil {
		return encrypted{}, err
	}
	if cv == nil {
		return encrypted{}, errors.New("no xenc:CipherData/xenc:CipherValue")
	}
	data, err := decodeBase64(cv.value())
	if err != nil {
		return encrypted{}, fmt.Errorf("CipherValue: %w", err)
	}
	if len(data) < 2*aes.BlockSize || len(data)%aes.BlockSize != 0 {
		return encrypted{}, fmt.Errorf("CipherValue: %d bytes is not an IV and whole AES blocks: %w", len(data), ErrDecrypt)
	}
	return encrypted{keySize: size, data: data}, nil
}

// decrypt decrypts e with key (AES-CBC, PKCS#7 padding).
func (e encrypted) decrypt(key []byte) ([]byte, error) {
	if len(key) != e.keySize {
		return nil, fmt.Errorf("the value is encrypted with AES-%d but the key is %d bytes", e.keySize*8, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	iv, ct := e.data[:aes.BlockSize], e.data[aes.BlockSize:]
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad == 0 || pad > aes.BlockSize {
		return nil, fmt.Errorf("bad padding: %w", ErrDecrypt)
	}
	for _, b := range pt[len(pt)-pad:] {
		if int(b) != pad {
			return nil, fmt.Errorf("bad padding: %w", ErrDecrypt)
		}
	}
	return pt[:len(pt)-pad], nil
}
