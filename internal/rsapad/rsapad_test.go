package rsapad

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math"
	"math/big"
	"testing"
)

// rawPrivate is the textbook private-key operation, for tests only.
func rawPrivate(k *rsa.PrivateKey, em []byte) []byte {
	c := new(big.Int).Exp(new(big.Int).SetBytes(em), k.D, k.N)
	return c.FillBytes(make([]byte, k.Size()))
}

func TestPSSVerifiesWithGo(t *testing.T) {
	for _, bits := range []int{2048, 2049} {
		key, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			hash crypto.Hash
			salt int
		}{
			{crypto.SHA256, rsa.PSSSaltLengthAuto},
			{crypto.SHA256, rsa.PSSSaltLengthEqualsHash},
			{crypto.SHA384, 0},
			{crypto.SHA512, 20},
		}
		for _, c := range cases {
			h := c.hash.New()
			h.Write([]byte("message"))
			digest := h.Sum(nil)
			em, err := PSS(rand.Reader, &key.PublicKey, digest, &rsa.PSSOptions{Hash: c.hash, SaltLength: c.salt})
			if err != nil {
				t.Fatal(err)
			}
			verifySalt := c.salt
			if verifySalt == rsa.PSSSaltLengthEqualsHash || verifySalt == rsa.PSSSaltLengthAuto {
				verifySalt = rsa.PSSSaltLengthAuto
			}
			if err := rsa.VerifyPSS(&key.PublicKey, c.hash, digest, rawPrivate(key, em), &rsa.PSSOptions{SaltLength: verifySalt}); err != nil {
				t.Errorf("%d bits, %v, salt %d: %v", bits, c.hash, c.salt, err)
			}
		}
	}
}

func TestPKCS1v15MatchesGo(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		hh := h.New()
		hh.Write([]byte("message"))
		digest := hh.Sum(nil)
		in, err := PKCS1v15(h, digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rsa.SignPKCS1v15(nil, key, 0, in)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := rsa.SignPKCS1v15(nil, key, h, digest)
		if !bytes.Equal(got, want) {
			t.Errorf("%v: signature differs from rsa.SignPKCS1v15", h)
		}
	}
	if in, err := PKCS1v15(0, []byte("pre-encoded")); err != nil || string(in) != "pre-encoded" {
		t.Errorf("hash 0: %q %v", in, err)
	}
}

func TestErrors(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 1024)
	d := sha256.Sum256(nil)
	d512 := sha512.Sum512(nil)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"PKCS1 unknown hash", func() error { _, err := PKCS1v15(crypto.RIPEMD160, d[:]); return err }(), ErrUnsupportedHash},
		{"PKCS1 short digest", func() error { _, err := PKCS1v15(crypto.SHA256, d[:5]); return err }(), ErrInvalidInput},
		{"PSS no hash", func() error { _, err := PSS(rand.Reader, &key.PublicKey, d[:], &rsa.PSSOptions{}); return err }(), ErrInvalidInput},
		{"PSS wrong digest", func() error {
			_, err := PSS(rand.Reader, &key.PublicKey, d[:], &rsa.PSSOptions{Hash: crypto.SHA512})
			return err
		}(), ErrInvalidInput},
		{"PSS salt too long", func() error {
			_, err := PSS(rand.Reader, &key.PublicKey, d512[:], &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: 100})
			return err
		}(), ErrInvalidInput},
		// hLen+sLen+2 wrapped past MaxInt and the check passed: a
		// makeslice panic sized by the caller's salt length.
		{"PSS salt length near MaxInt", func() error {
			_, err := PSS(rand.Reader, &key.PublicKey, d512[:], &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: math.MaxInt - 10})
			return err
		}(), ErrInvalidInput},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
}
