package keyd

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// Curve OIDs as keyd returns them in ec-curve-oid (DER, tag included).
var curveOIDs = []struct {
	oid   asn1.ObjectIdentifier
	curve elliptic.Curve
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}, elliptic.P256()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 34}, elliptic.P384()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 35}, elliptic.P521()},
}

// PublicKey rebuilds the public key of a key-pair handle from its public
// parameters only: *ecdsa.PublicKey or *rsa.PublicKey.
func (c *Client) PublicKey(ctx context.Context, handle string) (crypto.PublicKey, error) {
	alg, err := c.Parameter(ctx, handle, ParamAlgorithm)
	if err != nil {
		return nil, err
	}
	param := func(name string) ([]byte, error) {
		v, err := c.Parameter(ctx, handle, name)
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("keyd: parameter %q: %w", name, err)
		}
		return b, nil
	}
	switch alg {
	case "ECDSA":
		oidDER, err := param(ParamECCurveOID)
		if err != nil {
			return nil, err
		}
		point, err := param(ParamECPoint)
		if err != nil {
			return nil, err
		}
		return ecPublicKey(oidDER, point)
	case "RSA":
		n, err := param(ParamRSAModulus)
		if err != nil {
			return nil, err
		}
		e, err := param(ParamRSAExponent)
		if err != nil {
			return nil, err
		}
		return rsaPublicKey(n, e)
	}
	return nil, fmt.Errorf("keyd: unknown key algorithm %q", alg)
}

func ecPublicKey(oidDER, point []byte) (*ecdsa.PublicKey, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(oidDER, &oid); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("keyd: ec-curve-oid is not a DER object identifier: %x", oidDER)
	}
	for _, c := range curveOIDs {
		if !c.oid.Equal(oid) {
			continue
		}
		var x, y *big.Int
		if len(point) > 0 && point[0] == 4 {
			x, y = elliptic.Unmarshal(c.curve, point) //nolint:staticcheck // the curve arithmetic is needed for compressed points
		} else {
			x, y = elliptic.UnmarshalCompressed(c.curve, point)
		}
		if x == nil {
			return nil, errors.New("keyd: ec-point is not a point of the curve")
		}
		return &ecdsa.PublicKey{Curve: c.curve, X: x, Y: y}, nil
	}
	return nil, fmt.Errorf("keyd: unsupported curve %v", oid)
}

func rsaPublicKey(n, e []byte) (*rsa.PublicKey, error) {
	exp := new(big.Int).SetBytes(e)
	if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64() > 1<<31-1 {
		return nil, errors.New("keyd: rsa-exponent out of range")
	}
	mod := new(big.Int).SetBytes(n)
	if mod.BitLen() < 1024 {
		return nil, fmt.Errorf("keyd: rsa-modulus of %d bits is too small", mod.BitLen())
	}
	return &rsa.PublicKey{N: mod, E: int(exp.Int64())}, nil
}

// Signer returns a crypto.Signer whose private key stays in keyd: ECDSA
// signs the digest with /sign; RSA PKCS#1 v1.5 sends DigestInfo || digest
// to /encrypt RSA-PKCS1; RSA-PSS encodes EMSA-PSS here and sends it to
// /encrypt RSA-NO-PADDING, as aziot's openssl engine does. ctx bounds the
// parameter lookups and every later signature.
func (c *Client) Signer(ctx context.Context, handle string) (crypto.Signer, error) {
	pub, err := c.PublicKey(ctx, handle)
	if err != nil {
		return nil, err
	}
	return &signer{c: c, ctx: ctx, handle: handle, pub: pub}, nil
}

type signer struct {
	c      *Client
	ctx    context.Context
	handle string
	pub    crypto.PublicKey
}

// Public returns the public key built from keyd's public parameters.
func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest through keyd; rand is used only for the PSS salt.
func (s *signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	switch pub := s.pub.(type) {
	case *ecdsa.PublicKey:
		return s.c.Sign(s.ctx, s.handle, ECDSA, digest)
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			em, err := emsaPSSEncode(rand, digest, pub, pss)
			if err != nil {
				return nil, err
			}
			return s.c.Encrypt(s.ctx, s.handle, Mechanism{Algorithm: RSANoPadding}, em)
		}
		data, err := pkcs1DigestInfo(opts.HashFunc(), digest)
		if err != nil {
			return nil, err
		}
		return s.c.Encrypt(s.ctx, s.handle, Mechanism{Algorithm: RSAPKCS1}, data)
	}
	return nil, fmt.Errorf("keyd: cannot sign with a %T", s.pub)
}

// DigestInfo prefixes (RFC 8017 §9.2 note 1) for the hashes TLS and X.509 use.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// pkcs1DigestInfo is the input of a PKCS#1 v1.5 signature: DigestInfo ||
// digest, or the digest alone for crypto.Hash(0) (pre-encoded input).
func pkcs1DigestInfo(h crypto.Hash, digest []byte) ([]byte, error) {
	if h == 0 {
		return digest, nil
	}
	prefix, ok := digestInfoPrefix[h]
	if !ok {
		return nil, fmt.Errorf("keyd: unsupported hash %v for RSA PKCS#1 v1.5", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("keyd: digest of %d bytes for %v", len(digest), h)
	}
	return append(append(make([]byte, 0, len(prefix)+len(digest)), prefix...), digest...), nil
}

// emsaPSSEncode is EMSA-PSS-ENCODE (RFC 8017 §9.1.1) of mHash for pub, left
// padded to the modulus length for the raw private-key operation. The salt
// length follows rsa.PSSOptions: auto is the maximum, as rsa.SignPSS does.
func emsaPSSEncode(rand io.Reader, mHash []byte, pub *rsa.PublicKey, opts *rsa.PSSOptions) ([]byte, error) {
	h := opts.HashFunc()
	if !h.Available() {
		return nil, fmt.Errorf("keyd: hash %v is not available", h)
	}
	hLen := h.Size()
	if len(mHash) != hLen {
		return nil, fmt.Errorf("keyd: digest of %d bytes for %v", len(mHash), h)
	}
	k := (pub.N.BitLen() + 7) / 8
	emBits := pub.N.BitLen() - 1
	emLen := (emBits + 7) / 8
	sLen := opts.SaltLength
	switch sLen {
	case rsa.PSSSaltLengthAuto:
		sLen = emLen - hLen - 2
	case rsa.PSSSaltLengthEqualsHash:
		sLen = hLen
	}
	if sLen < 0 || emLen < hLen+sLen+2 {
		return nil, errors.New("keyd: key too small for the PSS parameters")
	}
	salt := make([]byte, sLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, fmt.Errorf("keyd: PSS salt: %w", err)
	}
	hash := h.New()
	hash.Write(make([]byte, 8))
	hash.Write(mHash)
	hash.Write(salt)
	H := hash.Sum(nil)

	out := make([]byte, k)
	em := out[k-emLen:]
	db := em[:emLen-hLen-1]
	db[emLen-sLen-hLen-2] = 0x01
	copy(db[emLen-sLen-hLen-1:], salt)
	mgf1XOR(db, h, H)
	db[0] &= 0xff >> (8*emLen - emBits)
	copy(em[emLen-hLen-1:], H)
	em[emLen-1] = 0xbc
	return out, nil
}

// mgf1XOR XORs out with MGF1(seed) using hash h.
func mgf1XOR(out []byte, h crypto.Hash, seed []byte) {
	var counter [4]byte
	hash := h.New()
	for done := 0; done < len(out); {
		hash.Reset()
		hash.Write(seed)
		hash.Write(counter[:])
		for _, b := range hash.Sum(nil) {
			if done >= len(out) {
				break
			}
			out[done] ^= b
			done++
		}
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}
