package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// use runs fn at the first location of id where the key is: a location
// whose backend answers ErrNotFound is skipped, any other answer is final
// (aziot's load order: an empty key file is an error, not a miss).
func use[T any](ctx context.Context, k *Keys, what, id string, fn func(location) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("hsm: %s with key %q: %w", what, id, err)
	}
	locs, err := k.locations(id)
	if err != nil {
		return zero, fmt.Errorf("hsm: %s with key %q: %w", what, id, err)
	}
	for _, l := range locs {
		out, err := fn(l)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return zero, fmt.Errorf("hsm: %s with key %q: %w", what, id, err)
		}
		return out, nil
	}
	return zero, fmt.Errorf("hsm: %s with key %q: %w", what, id, ErrNotFound)
}

// PublicKey returns the public key of key pair id: *ecdsa.PublicKey or
// *rsa.PublicKey (a preloaded file may hold other kinds).
func (k *Keys) PublicKey(ctx context.Context, id string) (crypto.PublicKey, error) {
	return use(ctx, k, "public key", id, func(l location) (crypto.PublicKey, error) {
		return l.b.PublicKey(ctx, l.loc)
	})
}

// SignECDSA signs a caller-computed digest with EC key pair id; the
// signature is ASN.1 DER (ECDSA-Sig-Value). A non-EC key is
// ErrInvalidParameter.
func (k *Keys) SignECDSA(ctx context.Context, id string, digest []byte) ([]byte, error) {
	return use(ctx, k, "ECDSA sign", id, func(l location) ([]byte, error) {
		return l.b.SignECDSA(ctx, l.loc, digest)
	})
}

// RSAPrivate is aziot's RSA "encrypt": the private-key operation of RSA key
// pair id on data, with PKCS#1 v1.5 type-1 padding (data at most k−11
// bytes) or none (data exactly k bytes and less than the modulus). The
// result is as long as the modulus.
func (k *Keys) RSAPrivate(ctx context.Context, id string, p RSAPadding, data []byte) ([]byte, error) {
	if p != RSAPKCS1 && p != RSANoPadding {
		return nil, fmt.Errorf("hsm: RSA private operation with key %q: %w: unknown padding %d", id, ErrInvalidParameter, p)
	}
	return use(ctx, k, "RSA private operation", id, func(l location) ([]byte, error) {
		return l.b.RSAPrivate(ctx, l.loc, p, data)
	})
}

// HMACSHA256 signs the whole msg with symmetric key id.
func (k *Keys) HMACSHA256(ctx context.Context, id string, msg []byte) ([]byte, error) {
	return use(ctx, k, "HMAC-SHA256", id, func(l location) ([]byte, error) {
		return l.b.HMACSHA256(ctx, l.loc, msg)
	})
}

// Encrypt is AES-GCM with symmetric key id (AES-256 for file keys: the key
// must be 32 bytes), caller IV (any non-empty length) and AAD. The result is
// aziot's v2 framing: 0x02 || ciphertext || 16-byte tag.
func (k *Keys) Encrypt(ctx context.Context, id string, iv, aad, plaintext []byte) ([]byte, error) {
	return use(ctx, k, "AEAD encrypt", id, func(l location) ([]byte, error) {
		ct, err := l.b.EncryptAEAD(ctx, l.loc, iv, aad, plaintext)
		if err != nil {
			return nil, err
		}
		return frameV2(ct), nil
	})
}

// Decrypt reverses Encrypt. It takes 0x02 || ciphertext || tag, and for file
// keys also IoT Edge 1.1's 0x01 || tag || ciphertext. A wrong key, IV, AAD
// or tag is ErrInvalidParameter.
func (k *Keys) Decrypt(ctx context.Context, id string, iv, aad, ciphertext []byte) ([]byte, error) {
	return use(ctx, k, "AEAD decrypt", id, func(l location) ([]byte, error) {
		ct, err := unframe(ciphertext, l.file)
		if err != nil && !l.file && len(ciphertext) >= 1+gcmTag && ciphertext[0] == aeadV1 {
			// v1 is refused where the key is, not where it is not: a
			// file key behind a base slot still takes it.
			if ok, kerr := l.b.KeyExists(ctx, l.loc); kerr == nil && !ok {
				return nil, ErrNotFound
			}
		}
		if err != nil {
			return nil, err
		}
		return l.b.DecryptAEAD(ctx, l.loc, iv, aad, ct)
	})
}

// DeriveKey returns HMAC-SHA256(base key, data), 32 bytes, computed in the
// store of symmetric key baseID (a PKCS#11 base key never leaves the token).
// The derived key is not stored: use it with DerivedHMACSHA256,
// DerivedEncrypt and DerivedDecrypt.
func (k *Keys) DeriveKey(ctx context.Context, baseID string, data []byte) ([]byte, error) {
	return use(ctx, k, "derive", baseID, func(l location) ([]byte, error) {
		return l.b.HMACSHA256(ctx, l.loc, data)
	})
}
