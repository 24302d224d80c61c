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

	"github.com/warden-iot/warden/internal/rsapad"
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
			em, err := rsapad.PSS(rand, pub, digest, pss)
			if err != nil {
				return nil, fmt.Errorf("keyd: RSA-PSS: %w", err)
			}
			return s.c.Encrypt(s.ctx, s.handle, Mechanism{Algorithm: RSANoPadding}, em)
		}
		data, err := rsapad.PKCS1v15(opts.HashFunc(), digest)
		if err != nil {
			return nil, fmt.Errorf("keyd: RSA PKCS#1 v1.5: %w", err)
		}
		return s.c.Encrypt(s.ctx, s.handle, Mechanism{Algorithm: RSAPKCS1}, data)
	}
	return nil, fmt.Errorf("keyd: cannot sign with a %T", s.pub)
}
