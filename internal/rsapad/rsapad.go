// Package rsapad encodes the input of an RSA signature whose private-key
// operation happens elsewhere (a key store, or keyd over its socket): the
// PKCS#1 v1.5 DigestInfo and the EMSA-PSS encoding of RFC 8017. Go's
// crypto/rsa does both only together with the private key.
package rsapad

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
)

var (
	// ErrUnsupportedHash: no DigestInfo is defined here for that hash, or it
	// is not linked into the binary.
	ErrUnsupportedHash = errors.New("unsupported hash")
	// ErrInvalidInput: a digest of the wrong length, or PSS parameters the
	// key cannot hold.
	ErrInvalidInput = errors.New("invalid input")
)

// digestInfoPrefix is the DER DigestInfo header (RFC 8017 §9.2 note 1) that
// precedes the digest in a PKCS#1 v1.5 signature. Hash 0 and MD5SHA1 (TLS
// 1.0/1.1) sign the bytes as given.
var digestInfoPrefix = map[crypto.Hash][]byte{
	0:                 nil,
	crypto.MD5SHA1:    nil,
	crypto.SHA1:       {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224:     {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256:     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384:     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512:     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	crypto.SHA512_224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x05, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA512_256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x06, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA3_256:   {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x08, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA3_384:   {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x09, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA3_512:   {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x0a, 0x05, 0x00, 0x04, 0x40},
}

// PKCS1v15 returns DigestInfo || digest, the bytes a PKCS#1 v1.5 (type 1)
// signature pads and signs. For hash 0 and MD5SHA1 it is digest itself.
func PKCS1v15(hash crypto.Hash, digest []byte) ([]byte, error) {
	prefix, ok := digestInfoPrefix[hash]
	if !ok {
		return nil, fmt.Errorf("%w: %v for RSA PKCS#1 v1.5", ErrUnsupportedHash, hash)
	}
	if hash != 0 && hash.Available() && len(digest) != hash.Size() {
		return nil, fmt.Errorf("%w: digest is %d bytes, %v needs %d", ErrInvalidInput, len(digest), hash, hash.Size())
	}
	return append(append(make([]byte, 0, len(prefix)+len(digest)), prefix...), digest...), nil
}

// PSS returns the EMSA-PSS encoding (RFC 8017 §9.1.1) of mHash for pub,
// with MGF1 over the same hash, left-padded to the modulus length so that it
// can go straight into a raw private-key operation. The salt length follows
// rsa.PSSOptions: PSSSaltLengthAuto is the largest that fits (as
// rsa.SignPSS), PSSSaltLengthEqualsHash the hash length.
func PSS(random io.Reader, pub *rsa.PublicKey, mHash []byte, opts *rsa.PSSOptions) ([]byte, error) {
	hash := opts.Hash
	if hash == 0 {
		return nil, fmt.Errorf("%w: PSS needs a hash", ErrInvalidInput)
	}
	if !hash.Available() {
		return nil, fmt.Errorf("%w: %v is not linked in", ErrUnsupportedHash, hash)
	}
	hLen := hash.Size()
	if len(mHash) != hLen {
		return nil, fmt.Errorf("%w: digest is %d bytes, %v needs %d", ErrInvalidInput, len(mHash), hash, hLen)
	}
	modBits := pub.N.BitLen()
	emBits := modBits - 1
	emLen := (emBits + 7) / 8
	sLen := opts.SaltLength
	switch sLen {
	case rsa.PSSSaltLengthAuto:
		sLen = emLen - hLen - 2
	case rsa.PSSSaltLengthEqualsHash:
		sLen = hLen
	}
	// Compared as emLen−hLen−2 (small) rather than hLen+sLen+2: a salt
	// length near MaxInt (a module's salt_length) wrapped the sum, passed,
	// and sized the salt buffer, a makeslice panic that ended the process.
	if sLen < 0 || sLen > emLen-hLen-2 {
		return nil, fmt.Errorf("%w: a %d-bit key cannot hold a %v PSS encoding with salt length %d",
			ErrInvalidInput, modBits, hash, opts.SaltLength)
	}
	salt := make([]byte, sLen)
	if _, err := io.ReadFull(random, salt); err != nil {
		return nil, fmt.Errorf("PSS salt: %w", err)
	}

	// H = Hash(0x00×8 || mHash || salt)
	h := hash.New()
	var zeros [8]byte
	h.Write(zeros[:])
	h.Write(mHash)
	h.Write(salt)
	hSum := h.Sum(nil)

	// EM = maskedDB || H || 0xbc, DB = PS || 0x01 || salt; written after
	// the leading zero bytes that pad EM to the modulus length.
	k := (modBits + 7) / 8
	out := make([]byte, k)
	em := out[k-emLen:]
	dbLen := emLen - hLen - 1
	db := em[:dbLen]
	db[dbLen-sLen-1] = 0x01
	copy(db[dbLen-sLen:], salt)
	mgf1XOR(db, hash, hSum)
	db[0] &= 0xff >> (8*emLen - emBits)
	copy(em[dbLen:], hSum)
	em[emLen-1] = 0xbc
	return out, nil
}

// mgf1XOR XORs out with MGF1(seed) over hash (RFC 8017 §B.2.1).
func mgf1XOR(out []byte, hash crypto.Hash, seed []byte) {
	h := hash.New()
	var counter [4]byte
	for done := 0; done < len(out); {
		h.Reset()
		h.Write(seed)
		h.Write(counter[:])
		for _, b := range h.Sum(nil) {
			if done == len(out) {
				break
			}
			out[done] ^= b
			done++
		}
		for i := 3; i >= 0; i-- {
			if counter[i]++; counter[i] != 0 {
				break
			}
		}
	}
}
