package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"

	_ "crypto/sha1"
	_ "crypto/sha512"

	"github.com/warden-iot/warden/internal/rsapad"
)

// rsaStores returns a store with the test RSA key as "rsa" in a file, and
// one with it behind the fake PKCS#11 backend (as the token's raw RSA).
func rsaStores(t *testing.T) map[string]*Keys {
	t.Helper()
	der, _ := x509.MarshalPKCS8PrivateKey(testRSAKey(t))
	fileKeys := openFileKeys(t)
	writeFile(t, filepath.Join(fileKeys.homeDir, "keys", KeyFileName("rsa")), pemKey(t, "PRIVATE KEY", der))

	f := newFakeP11(t)
	tokenKeys, _ := openTokenKeys(t, f)
	p := filepath.Join(f.dir, "rsa.pem")
	writeFile(t, p, pemKey(t, "PRIVATE KEY", der))
	f.pairs[withObject(testSlot, "rsa")] = p
	return map[string]*Keys{"file": fileKeys, "token": tokenKeys}
}

func TestSignerECDSA(t *testing.T) {
	ctx := context.Background()
	k := openFileKeys(t)
	k.CreateKeyPair(ctx, "ec", []Algorithm{ECP256})
	s, err := k.Signer(ctx, "ec")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*ecdsa.PrivateKey); ok {
		t.Fatal("the signer exposes the private key")
	}
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384} {
		d := h.New()
		d.Write([]byte("warden"))
		digest := d.Sum(nil)
		sig, err := s.Sign(rand.Reader, digest, h)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, sig) {
			t.Fatalf("%v signature does not verify", h)
		}
	}
	if _, err := s.Sign(rand.Reader, []byte("short"), crypto.SHA256); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("digest of the wrong length: %v", err)
	}
}

func TestSignerRSAPKCS1(t *testing.T) {
	ctx := context.Background()
	pub := &testRSAKey(t).PublicKey
	hashes := []crypto.Hash{crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA512_224, crypto.SHA512_256}
	for name, k := range rsaStores(t) {
		t.Run(name, func(t *testing.T) {
			s, err := k.Signer(ctx, "rsa")
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(s.Public()) {
				t.Fatal("wrong public key")
			}
			for _, h := range hashes {
				d := h.New()
				d.Write([]byte("warden"))
				digest := d.Sum(nil)
				sig, err := s.Sign(rand.Reader, digest, h)
				if err != nil {
					t.Fatalf("%v: %v", h, err)
				}
				if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
					t.Fatalf("%v: %v", h, err)
				}
			}
			raw := make([]byte, 36) // TLS 1.1 MD5||SHA-1: no DigestInfo
			sig, err := s.Sign(rand.Reader, raw, crypto.MD5SHA1)
			if err != nil || rsa.VerifyPKCS1v15(pub, 0, raw, sig) != nil {
				t.Fatalf("MD5SHA1: %v", err)
			}
		})
	}
}

func TestSignerRSAPSS(t *testing.T) {
	ctx := context.Background()
	pub := &testRSAKey(t).PublicKey
	salts := []int{rsa.PSSSaltLengthEqualsHash, rsa.PSSSaltLengthAuto, 0 + 20, 1}
	for name, k := range rsaStores(t) {
		t.Run(name, func(t *testing.T) {
			s, _ := k.Signer(ctx, "rsa")
			for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
				for _, salt := range salts {
					d := h.New()
					d.Write([]byte("warden"))
					digest := d.Sum(nil)
					opts := &rsa.PSSOptions{SaltLength: salt, Hash: h}
					sig, err := s.Sign(rand.Reader, digest, opts)
					if err != nil {
						t.Fatalf("%v salt %d: %v", h, salt, err)
					}
					// Verify with the salt length Go infers, and with the exact one.
					if err := rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
						t.Fatalf("%v salt %d: %v", h, salt, err)
					}
					if err := rsa.VerifyPSS(pub, h, digest, sig, opts); err != nil {
						t.Fatalf("%v salt %d (exact): %v", h, salt, err)
					}
				}
			}
			digest := make([]byte, 64)
			if _, err := s.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: 200, Hash: crypto.SHA512}); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("a salt too long for the key: %v", err)
			}
		})
	}
}

// TestEMSAPSSOddModulus: moduli whose bit length is 1 mod 8 have an EM one
// byte shorter than the modulus (the encoder left-pads it).
func TestEMSAPSSOddModulus(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2049)
	if err != nil {
		t.Fatal(err)
	}
	c := newRSACRT(priv)
	digest := make([]byte, 32)
	for _, salt := range []int{rsa.PSSSaltLengthAuto, rsa.PSSSaltLengthEqualsHash} {
		em, err := rsapad.PSS(rand.Reader, &priv.PublicKey, digest, &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256})
		if err != nil || len(em) != priv.Size() || em[0] != 0 {
			t.Fatalf("EM: %d bytes, first %x, %v", len(em), em[0], err)
		}
		sig, err := c.private(rand.Reader, em)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(&priv.PublicKey, crypto.SHA256, digest, sig, nil); err != nil {
			t.Fatal(err)
		}
	}
}
