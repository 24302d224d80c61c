package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
)

// Signer returns key pair id as a crypto.Signer whose private key stays in
// the store. Sign runs with context.Background() (crypto.Signer has no
// context) and:
//
//   - EC: signs the digest (SignECDSA), ASN.1 DER;
//   - RSA with *rsa.PSSOptions: encodes EMSA-PSS here and applies the raw
//     private operation (RSANoPadding), so PSS works with any backend that
//     can do raw RSA, as aziot's openssl engine does;
//   - RSA otherwise: PKCS#1 v1.5, the DigestInfo of opts.HashFunc() and the
//     digest with type-1 padding (RSAPKCS1); hash 0 signs the bytes as given.
//
// The public key is read once, here: a Signer does not follow a later move
// of another key pair onto id.
func (k *Keys) Signer(ctx context.Context, id string) (crypto.Signer, error) {
	pub, err := k.PublicKey(ctx, id)
	if err != nil {
		return nil, err
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return nil, fmt.Errorf("hsm: signer for key %q: %w: %T keys cannot sign through the key store", id, ErrUnsupported, pub)
	}
	return &storeSigner{keys: k, id: id, pub: pub}, nil
}

// storeSigner signs in the store; it holds no key material.
type storeSigner struct {
	keys *Keys
	id   string
	pub  crypto.PublicKey
}

// Public returns the public key.
func (s *storeSigner) Public() crypto.PublicKey { return s.pub }

// Sign signs digest as crypto.Signer specifies; see Keys.Signer.
func (s *storeSigner) Sign(random io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx := context.Background()
	if random == nil {
		random = rand.Reader
	}
	var hash crypto.Hash
	if opts != nil {
		hash = opts.HashFunc()
	}
	if hash != 0 && hash.Available() && len(digest) != hash.Size() {
		return nil, fmt.Errorf("hsm: sign with key %q: %w: digest is %d bytes, %v needs %d",
			s.id, ErrInvalidParameter, len(digest), hash, hash.Size())
	}
	switch pub := s.pub.(type) {
	case *ecdsa.PublicKey:
		return s.keys.SignECDSA(ctx, s.id, digest)
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			em, err := emsaPSSEncode(random, pub, digest, pss)
			if err != nil {
				return nil, fmt.Errorf("hsm: RSA-PSS sign with key %q: %w", s.id, err)
			}
			return s.keys.RSAPrivate(ctx, s.id, RSANoPadding, em)
		}
		prefix, ok := digestInfoPrefix[hash]
		if !ok {
			return nil, fmt.Errorf("hsm: RSA PKCS#1 v1.5 sign with key %q: %w: hash %v", s.id, ErrUnsupported, hash)
		}
		return s.keys.RSAPrivate(ctx, s.id, RSAPKCS1, append(prefix[:len(prefix):len(prefix)], digest...))
	default:
		return nil, fmt.Errorf("hsm: sign with key %q: %w: %T", s.id, ErrUnsupported, pub)
	}
}

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

// emsaPSSEncode returns the EMSA-PSS encoding (RFC 8017 §9.1.1) of mHash for
// pub, with MGF1 over the same hash, left-padded to the modulus length so it
// can go straight into the raw private operation. The salt length follows
// rsa.PSSOptions: PSSSaltLengthAuto is the largest that fits (as
// rsa.SignPSS), PSSSaltLengthEqualsHash the hash length.
func emsaPSSEncode(random io.Reader, pub *rsa.PublicKey, mHash []byte, opts *rsa.PSSOptions) ([]byte, error) {
	hash := opts.Hash
	if hash == 0 {
		return nil, fmt.Errorf("%w: PSS needs a hash", ErrInvalidParameter)
	}
	if !hash.Available() {
		return nil, fmt.Errorf("%w: hash %v is not linked in", ErrUnsupported, hash)
	}
	hLen := hash.Size()
	if len(mHash) != hLen {
		return nil, fmt.Errorf("%w: digest is %d bytes, %v needs %d", ErrInvalidParameter, len(mHash), hash, hLen)
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
	if sLen < 0 || emLen < hLen+sLen+2 {
		return nil, fmt.Errorf("%w: a %d-bit key cannot hold a %v PSS encoding with a %d-byte salt",
			ErrInvalidParameter, modBits, hash, opts.SaltLength)
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
