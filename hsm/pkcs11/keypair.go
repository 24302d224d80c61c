package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// oidP256 is the DER of OID 1.2.840.10045.3.1.7 (prime256v1), CKA_EC_PARAMS.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// pairTemplates returns the mechanism and public and private templates that
// generate a key pair of alg labelled label, both halves with CKA_ID id.
func pairTemplates(alg hsm.Algorithm, label string, id []byte) (uint, []*pkcs11.Attribute, []*pkcs11.Attribute, error) {
	pub := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	switch alg {
	case hsm.ECP256:
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256))
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC))
		return pkcs11.CKM_EC_KEY_PAIR_GEN, pub, priv, nil
	case hsm.RSA2048, hsm.RSA4096:
		bits := 2048
		if alg == hsm.RSA4096 {
			bits = 4096
		}
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA))
		return pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pub, priv, nil
	}
	return 0, nil, nil, fmt.Errorf("unknown algorithm %q", alg)
}

// CreateKeyPair generates a key pair labelled with loc's object unless the
// token holds both halves already, trying each of algs in order
// (CKM_EC_KEY_PAIR_GEN on P-256, CKM_RSA_PKCS_KEY_PAIR_GEN with e = 65537).
// A lone half left over from an earlier failure is deleted first. If no
// algorithm succeeds the error wraps hsm.ErrUnsupported.
func (b *Backend) CreateKeyPair(ctx context.Context, loc string, algs []hsm.Algorithm) error {
	return b.do(ctx, loc, "create key pair", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.createMu.Lock()
		defer t.createMu.Unlock()
		ok, err := t.pairExists(s, label)
		if err != nil || ok {
			return err
		}
		if err := t.destroy(s, label, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY); err != nil {
			return fmt.Errorf("delete a half key pair: %w", err)
		}
		var failures []string
		id := newPairID()
		for _, alg := range algs {
			m, pubT, privT, err := pairTemplates(alg, label, id)
			if err != nil {
				failures = append(failures, err.Error())
				continue
			}
			if _, _, err := t.b.p.GenerateKeyPair(s, mech(m, nil), pubT, privT); err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", alg, plain(err)))
				t.b.log.Info("PKCS#11 token could not generate a key pair; trying the next algorithm",
					"token", t.name, "label", label, "alg", alg, "err", plain(err))
				continue
			}
			t.forget(label)
			t.b.log.Info("PKCS#11 key pair created", "token", t.name, "label", label, "alg", alg)
			return nil
		}
		return fmt.Errorf("no algorithm succeeded (%s): %w", strings.Join(failures, "; "), hsm.ErrUnsupported)
	})
}

// pairExists asks the token (not the cache) for both halves of label.
func (t *token) pairExists(s pkcs11.SessionHandle, label string) (bool, error) {
	for _, c := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		t.handles.Delete(objKey{c, label})
		if _, err := t.find(s, c, label); err != nil {
			if errors.Is(err, hsm.ErrNotFound) {
				return false, nil
			}
			return false, err
		}
	}
	return true, nil
}

// KeyPairExists reports whether the token holds a private and a public key
// labelled with loc's object.
func (b *Backend) KeyPairExists(ctx context.Context, loc string) (bool, error) {
	var ok bool
	err := b.do(ctx, loc, "look up key pair", func(t *token, s pkcs11.SessionHandle, label string) error {
		var err error
		ok, err = t.pairExists(s, label)
		return err
	})
	return ok, err
}

// DeleteKeyPair destroys the private and public keys labelled with loc's
// object; none is not an error.
func (b *Backend) DeleteKeyPair(ctx context.Context, loc string) error {
	return b.do(ctx, loc, "delete key pair", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.createMu.Lock()
		defer t.createMu.Unlock()
		return t.destroy(s, label, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY)
	})
}

// MoveKeyPair relabels the key pair at from as to's object, after destroying
// the keys labelled to. Both locations must name the same token. The private
// key is relabelled first; if Warden stops before the public key follows,
// the next lookup of either label finishes the move (finishMove), provided
// the halves share a pair ID (pairs Warden made; a pair with no CKA_ID at
// all is given one here).
func (b *Backend) MoveKeyPair(ctx context.Context, from, to string) error {
	dst, err := ParseURI(to)
	if err != nil {
		return fmt.Errorf("%w (%w)", err, hsm.ErrInvalidParameter)
	}
	if dst.Object == "" {
		return fmt.Errorf("pkcs11: move key pair: the destination %q names no object (%w)", dst.Redacted(), hsm.ErrInvalidParameter)
	}
	dt, err := b.token(ctx, dst)
	if err != nil {
		return fmt.Errorf("pkcs11: move key pair to %q: %w", dst.Redacted(), err)
	}
	return b.do(ctx, from, "move key pair", func(t *token, s pkcs11.SessionHandle, label string) error {
		if dt != t {
			return fmt.Errorf("the destination %q is on another token (%w)", dst.Redacted(), hsm.ErrInvalidParameter)
		}
		t.createMu.Lock()
		defer t.createMu.Unlock()
		defer t.forget(label)
		defer t.forget(dst.Object)
		if ok, err := t.pairExists(s, label); err != nil || !ok {
			if err == nil {
				err = hsm.ErrNotFound
			}
			return err
		}
		if dst.Object == label {
			return nil
		}
		priv, err := t.find(s, pkcs11.CKO_PRIVATE_KEY, label)
		if err != nil {
			return err
		}
		pub, err := t.find(s, pkcs11.CKO_PUBLIC_KEY, label)
		if err != nil {
			return err
		}
		t.ensurePairID(s, priv.h, pub.h)
		t.forget(label)
		if err := t.destroy(s, dst.Object, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY); err != nil {
			return fmt.Errorf("delete the key pair at the destination: %w", err)
		}
		relabel := func(o *object, l string) error {
			return t.b.p.SetAttributeValue(s, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, l)})
		}
		if err := relabel(priv, dst.Object); err != nil {
			return fmt.Errorf("relabel the private key: %w", describe(err))
		}
		if err := relabel(pub, dst.Object); err != nil {
			if rerr := relabel(priv, label); rerr != nil {
				t.b.log.Error("PKCS#11 could not undo a half-done key pair move",
					"token", t.name, "from", label, "to", dst.Object, "err", plain(rerr))
			}
			return fmt.Errorf("relabel the public key: %w", describe(err))
		}
		t.b.log.Info("PKCS#11 key pair moved", "token", t.name, "from", label, "to", dst.Object)
		return nil
	})
}

// PublicKey reads the public key labelled with loc's object: an
// *ecdsa.PublicKey (P-256) from CKA_EC_POINT or an *rsa.PublicKey from
// CKA_MODULUS and CKA_PUBLIC_EXPONENT.
func (b *Backend) PublicKey(ctx context.Context, loc string) (crypto.PublicKey, error) {
	var pk crypto.PublicKey
	err := b.do(ctx, loc, "read the public key", func(t *token, s pkcs11.SessionHandle, label string) error {
		return t.with(s, pkcs11.CKO_PUBLIC_KEY, label, func(o *object) error {
			h := o.h
			var a []*pkcs11.Attribute
			var err error
			switch kt := o.keyType; kt {
			case pkcs11.CKK_EC:
				a, err = t.attrs(s, h, pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
				if err != nil {
					return err
				}
				pk, err = ecPublicKey(a[0].Value, a[1].Value)
				return err
			case pkcs11.CKK_RSA:
				a, err = t.attrs(s, h, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
				if err != nil {
					return err
				}
				e := new(big.Int).SetBytes(a[1].Value)
				if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
					return fmt.Errorf("the public exponent %v is out of range", e)
				}
				pk = &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(e.Int64())}
				return nil
			default:
				return fmt.Errorf("key type 0x%x is neither EC nor RSA (%w)", kt, hsm.ErrUnsupported)
			}
		})
	})
	return pk, err
}

// ulong decodes a CK_ULONG attribute value (native size and byte order).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return pkcs11.CK_UNAVAILABLE_INFORMATION
}

// ecPublicKey parses CKA_EC_PARAMS and CKA_EC_POINT (a DER OCTET STRING
// around the uncompressed point; some tokens give the bare point).
func ecPublicKey(params, point []byte) (*ecdsa.PublicKey, error) {
	if !bytes.Equal(params, oidP256) {
		return nil, fmt.Errorf("the curve (CKA_EC_PARAMS %x) is not P-256 (%w)", params, hsm.ErrUnsupported)
	}
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("parse CKA_EC_POINT: %w", err)
	}
	return pk, nil
}

// SignECDSA signs digest with CKM_ECDSA and the private key labelled with
// loc's object, and returns the signature as ASN.1 DER.
func (b *Backend) SignECDSA(ctx context.Context, loc string, digest []byte) ([]byte, error) {
	var der []byte
	err := b.do(ctx, loc, "sign with", func(t *token, s pkcs11.SessionHandle, label string) error {
		return t.with(s, pkcs11.CKO_PRIVATE_KEY, label, func(o *object) error {
			if err := o.wantType(pkcs11.CKK_EC, "EC"); err != nil {
				return err
			}
			rs, err := t.sign(s, o.h, pkcs11.CKM_ECDSA, digest)
			if err != nil {
				return err
			}
			if len(rs) == 0 || len(rs)%2 != 0 {
				return fmt.Errorf("the token returned a %d-byte ECDSA signature, not r||s", len(rs))
			}
			der, err = asn1.Marshal(struct{ R, S *big.Int }{
				new(big.Int).SetBytes(rs[:len(rs)/2]), new(big.Int).SetBytes(rs[len(rs)/2:]),
			})
			return err
		})
	})
	return der, err
}

// RSAPrivate applies the RSA private key labelled with loc's object to data:
// CKM_RSA_PKCS (the token adds PKCS#1 v1.5 type-1 padding) or CKM_RSA_X509
// (no padding). The output is as long as the modulus.
func (b *Backend) RSAPrivate(ctx context.Context, loc string, padding hsm.RSAPadding, data []byte) ([]byte, error) {
	var m uint
	switch padding {
	case hsm.RSAPKCS1:
		m = pkcs11.CKM_RSA_PKCS
	case hsm.RSANoPadding:
		m = pkcs11.CKM_RSA_X_509
	default:
		return nil, fmt.Errorf("pkcs11: unknown RSA padding %d (%w)", padding, hsm.ErrInvalidParameter)
	}
	var out []byte
	err := b.do(ctx, loc, "sign with", func(t *token, s pkcs11.SessionHandle, label string) error {
		return t.with(s, pkcs11.CKO_PRIVATE_KEY, label, func(o *object) error {
			if err := o.wantType(pkcs11.CKK_RSA, "RSA"); err != nil {
				return err
			}
			if err := checkRSAInput(o.modulus, padding, data); err != nil {
				return err
			}
			var err error
			out, err = t.sign(s, o.h, m, data)
			return err
		})
	})
	return out, err
}

// checkRSAInput rejects data the private-key operation cannot take with this
// modulus, as RSA_private_encrypt would (tokens answer such input with
// anything from CKR_DATA_LEN_RANGE to CKR_GENERAL_ERROR).
func checkRSAInput(modulus []byte, padding hsm.RSAPadding, data []byte) error {
	n := new(big.Int).SetBytes(modulus)
	k := (n.BitLen() + 7) / 8
	if k == 0 {
		return nil // modulus unknown: let the token decide
	}
	switch {
	case padding == hsm.RSAPKCS1 && len(data) > k-11:
		return fmt.Errorf("%d bytes do not fit PKCS#1 v1.5 padding for a %d-byte modulus (at most %d) (%w)",
			len(data), k, k-11, hsm.ErrInvalidParameter)
	case padding == hsm.RSANoPadding && (len(data) > k || new(big.Int).SetBytes(data).Cmp(n) >= 0):
		return fmt.Errorf("the input is not below the modulus (%w)", hsm.ErrInvalidParameter)
	}
	return nil
}

// sign is C_SignInit and C_Sign.
func (t *token) sign(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, m uint, data []byte) ([]byte, error) {
	if err := t.b.p.SignInit(s, mech(m, nil), h); err != nil {
		return nil, err
	}
	return t.b.p.Sign(s, data)
}
