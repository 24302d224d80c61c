package hsm

import (
	"context"
	"crypto"
	"errors"
	"strings"
)

// Errors a Backend returns, for callers to tell apart with errors.Is.
var (
	// ErrNotFound: no key at that location.
	ErrNotFound = errors.New("key not found")
	// ErrUnsupported: the backend (e.g. a PKCS#11 token) cannot do this
	// operation or mechanism; the key store falls back to the next location
	// where aziot does.
	ErrUnsupported = errors.New("operation not supported by the key store")
	// ErrInvalidParameter: the request itself is wrong (bad IV, wrong key type,
	// malformed ciphertext…); keyd answers 400.
	ErrInvalidParameter = errors.New("invalid parameter")
	// ErrMalformed: something is at the location but it is not a usable key
	// (the file backend: an empty key file, or a key-pair file that is not a
	// PEM private key — what an ungraceful shutdown under aziot could leave).
	// Create paths treat it as missing and replace it (aziot PR #612); load
	// and use paths report it (keyd answers 500).
	ErrMalformed = errors.New("malformed key")
)

// Usage is what a symmetric key is for, as aziot's usage flags
// (derive and sign share one bit; encrypt is its own).
type Usage uint8

// Usage flags.
const (
	UsageSign    Usage = 1
	UsageDerive  Usage = 1
	UsageEncrypt Usage = 16
)

// ParseUsage parses aziot's comma-separated usage ("derive,sign", "encrypt").
func ParseUsage(s string) (Usage, error) {
	var u Usage
	for _, part := range strings.Split(s, ",") {
		switch part {
		case "derive":
			u |= UsageDerive
		case "sign":
			u |= UsageSign
		case "encrypt":
			u |= UsageEncrypt
		default:
			return 0, errors.New("unknown key usage " + `"` + part + `"`)
		}
	}
	return u, nil
}

// Algorithm is a key-pair algorithm.
type Algorithm string

// The key-pair algorithms aziot supports.
const (
	ECP256  Algorithm = "ec-p256"
	RSA2048 Algorithm = "rsa-2048"
	RSA4096 Algorithm = "rsa-4096"
)

// ParsePreferredAlgorithms parses aziot's preferredAlgorithms: a ":"-separated
// list; "" means [ec-p256, rsa-2048]; "*" expands to ec-p256, rsa-2048;
// unknown entries are ignored; the result is deduplicated in order.
func ParsePreferredAlgorithms(s string) []Algorithm {
	if s == "" {
		return []Algorithm{ECP256, RSA2048}
	}
	var out []Algorithm
	add := func(a Algorithm) {
		for _, b := range out {
			if a == b {
				return
			}
		}
		out = append(out, a)
	}
	for _, part := range strings.Split(s, ":") {
		switch a := Algorithm(part); a {
		case ECP256, RSA2048, RSA4096:
			add(a)
		case "*":
			add(ECP256)
			add(RSA2048)
		}
	}
	return out
}

// RSAPadding selects the RSA private-key operation of aziot's /encrypt.
type RSAPadding int

// RSA paddings.
const (
	// RSAPKCS1 is PKCS#1 v1.5 type-1 padding over the caller's bytes
	// (RSA_private_encrypt with RSA_PKCS1_PADDING).
	RSAPKCS1 RSAPadding = iota + 1
	// RSANoPadding is the raw private-key operation (the openssl engine pads,
	// e.g. for PSS).
	RSANoPadding
)

// Backend keeps keys in one kind of place. A location is backend-specific:
// an absolute file path for the file backend, a PKCS#11 URI (RFC 7512, with
// object=<label>) for the PKCS#11 backend. Backends are safe for concurrent
// use. No method returns private key material, except that the file backend
// reads symmetric keys into memory to use them.
type Backend interface {
	// CreateKey generates a symmetric key at loc unless one exists
	// (then it does nothing). Generated keys are 32 bytes (AES-256 or an
	// HMAC-SHA256 secret).
	CreateKey(ctx context.Context, loc string, usage Usage) error
	// ImportKey stores key at loc, replacing any key there.
	ImportKey(ctx context.Context, loc string, key []byte, usage Usage) error
	// KeyExists reports whether a (well-formed) symmetric key is at loc; a
	// malformed one gives false and an error wrapping ErrMalformed.
	KeyExists(ctx context.Context, loc string) (bool, error)
	// DeleteKey removes the symmetric key at loc; absent is not an error.
	DeleteKey(ctx context.Context, loc string) error
	// HMACSHA256 signs msg with the symmetric key at loc.
	HMACSHA256(ctx context.Context, loc string, msg []byte) ([]byte, error)
	// EncryptAEAD is AES-GCM with a 16-byte tag; it returns ct||tag.
	EncryptAEAD(ctx context.Context, loc string, iv, aad, plaintext []byte) ([]byte, error)
	// DecryptAEAD takes ct||tag.
	DecryptAEAD(ctx context.Context, loc string, iv, aad, ciphertext []byte) ([]byte, error)

	// CreateKeyPair generates a key pair at loc unless one exists, with the
	// first algorithm of algs the backend can do (ErrUnsupported if none).
	CreateKeyPair(ctx context.Context, loc string, algs []Algorithm) error
	// KeyPairExists reports whether a (well-formed) key pair is at loc; a
	// malformed one gives false and an error wrapping ErrMalformed.
	KeyPairExists(ctx context.Context, loc string) (bool, error)
	// DeleteKeyPair removes the key pair at loc; absent is not an error.
	DeleteKeyPair(ctx context.Context, loc string) error
	// MoveKeyPair moves the key pair at from to to, replacing to.
	MoveKeyPair(ctx context.Context, from, to string) error
	// PublicKey returns the public key (*ecdsa.PublicKey or *rsa.PublicKey).
	PublicKey(ctx context.Context, loc string) (crypto.PublicKey, error)
	// SignECDSA signs a caller-computed digest; the signature is ASN.1 DER.
	SignECDSA(ctx context.Context, loc string, digest []byte) ([]byte, error)
	// RSAPrivate applies the private key to data with padding; the output is
	// as long as the modulus.
	RSAPrivate(ctx context.Context, loc string, padding RSAPadding, data []byte) ([]byte, error)

	// Close releases the backend (sessions, library handles).
	Close() error
}
