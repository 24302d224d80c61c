package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/warden-iot/warden/internal/rsapad"
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
			em, err := rsapad.PSS(random, pub, digest, pss)
			if err != nil {
				return nil, fmt.Errorf("hsm: RSA-PSS sign with key %q: %w", s.id, padError(err))
			}
			return s.keys.RSAPrivate(ctx, s.id, RSANoPadding, em)
		}
		in, err := rsapad.PKCS1v15(hash, digest)
		if err != nil {
			return nil, fmt.Errorf("hsm: RSA PKCS#1 v1.5 sign with key %q: %w", s.id, padError(err))
		}
		return s.keys.RSAPrivate(ctx, s.id, RSAPKCS1, in)
	default:
		return nil, fmt.Errorf("hsm: sign with key %q: %w: %T", s.id, ErrUnsupported, pub)
	}
}

// padError classifies an rsapad error as the store's ErrUnsupported or
// ErrInvalidParameter.
func padError(err error) error {
	if errors.Is(err, rsapad.ErrUnsupportedHash) {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return fmt.Errorf("%w: %w", ErrInvalidParameter, err)
}
