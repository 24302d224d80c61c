package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
)

var (
	rsaKeyOnce sync.Once
	rsaKey     *rsa.PrivateKey
)

// testRSAKey is one RSA-2048 key for the package's tests (generation is slow).
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return rsaKey
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestAEADFraming checks aziot's ciphertext framing through the key store
// (a file key) and for derived keys, against GCM test case 14 of McGrew &
// Viega (AES-256, zero key, zero 12-byte IV, one zero block).
func TestAEADFraming(t *testing.T) {
	ctx := context.Background()
	k := openFileKeys(t)
	zeroKey := make([]byte, 32)
	if err := k.ImportKey(ctx, "aead", zeroKey, UsageEncrypt); err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, 12)
	pt := make([]byte, 16)
	want := append(append([]byte{0x02}, unhex("cea7403d4d606b6e074ec5d3baf39d18")...), unhex("d0d1c8a799996bf0265b98b5d48ab919")...)

	stores := []struct {
		name    string
		encrypt func(iv, aad, pt []byte) ([]byte, error)
		decrypt func(iv, aad, ct []byte) ([]byte, error)
	}{
		{"file key",
			func(iv, aad, pt []byte) ([]byte, error) { return k.Encrypt(ctx, "aead", iv, aad, pt) },
			func(iv, aad, ct []byte) ([]byte, error) { return k.Decrypt(ctx, "aead", iv, aad, ct) }},
		{"derived key",
			func(iv, aad, pt []byte) ([]byte, error) { return DerivedEncrypt(zeroKey, iv, aad, pt) },
			func(iv, aad, ct []byte) ([]byte, error) { return DerivedDecrypt(zeroKey, iv, aad, ct) }},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ct, err := s.encrypt(iv, nil, pt)
			if err != nil || !bytes.Equal(ct, want) {
				t.Fatalf("Encrypt = %x, %v; want %x", ct, err, want)
			}
			v1 := append(append([]byte{0x01}, ct[len(ct)-16:]...), ct[1:len(ct)-16]...)
			for _, in := range [][]byte{ct, v1} {
				got, err := s.decrypt(iv, nil, in)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("Decrypt(version %d) = %x, %v", in[0], got, err)
				}
			}
			// Other IV lengths and AAD round-trip.
			for _, n := range []int{1, 12, 16, 60} {
				iv := bytes.Repeat([]byte{9}, n)
				ct, err := s.encrypt(iv, []byte("aad"), []byte("hello"))
				if err != nil || ct[0] != 0x02 || len(ct) != 1+5+16 {
					t.Fatalf("%d-byte IV: %x, %v", n, ct, err)
				}
				if got, err := s.decrypt(iv, []byte("aad"), ct); err != nil || string(got) != "hello" {
					t.Fatalf("%d-byte IV: decrypt %q, %v", n, got, err)
				}
			}
			tampered := bytes.Clone(ct)
			tampered[len(tampered)-1] ^= 1
			bad := []struct {
				name   string
				iv, ct []byte
				aad    []byte
			}{
				{"wrong tag", iv, tampered, nil},
				{"wrong AAD", iv, ct, []byte("x")},
				{"wrong IV", []byte("0123456789ab"), ct, nil},
				{"empty IV", nil, ct, nil},
				{"unknown version", iv, append([]byte{0x03}, ct[1:]...), nil},
				{"too short", iv, ct[:16], nil},
				{"empty", iv, nil, nil},
			}
			for _, b := range bad {
				if _, err := s.decrypt(b.iv, b.aad, b.ct); !errors.Is(err, ErrInvalidParameter) {
					t.Errorf("%s: %v, want ErrInvalidParameter", b.name, err)
				}
			}
			if _, err := s.encrypt(nil, nil, pt); !errors.Is(err, ErrInvalidParameter) {
				t.Errorf("encrypt with an empty IV: %v", err)
			}
		})
	}
	// A file key that is not 32 bytes cannot do AES-256-GCM.
	k.ImportKey(ctx, "short", []byte("sixteen byte key"), UsageEncrypt)
	if _, err := k.Encrypt(ctx, "short", iv, nil, pt); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("encrypt with a 16-byte file key: %v", err)
	}
	if _, err := DerivedEncrypt(make([]byte, 31), iv, nil, pt); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("encrypt with a 31-byte derived key: %v", err)
	}
}

func TestRSAPrivateFile(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	priv := testRSAKey(t)
	loc := filepath.Join(t.TempDir(), "rsa.key")
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	writeFile(t, loc, pemKey(t, "PRIVATE KEY", der))
	k := priv.Size()

	// PKCS#1 v1.5 type 1 over the caller's bytes.
	data := []byte("a DigestInfo, or TLS 1.1's MD5||SHA-1")
	sig, err := b.RSAPrivate(ctx, loc, RSAPKCS1, data)
	if err != nil || len(sig) != k {
		t.Fatalf("PKCS1: %d bytes, %v", len(sig), err)
	}
	if err := rsa.VerifyPKCS1v15(&priv.PublicKey, 0, data, sig); err != nil {
		t.Fatalf("PKCS1 signature does not verify: %v", err)
	}
	if _, err := b.RSAPrivate(ctx, loc, RSAPKCS1, make([]byte, k-10)); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("PKCS1 input too long: %v", err)
	}

	// No padding over a PKCS#1 type-1 block equals the padded operation
	// (PKCS#1 v1.5 signatures are deterministic).
	em := make([]byte, k)
	em[1] = 1
	for i := 2; i < k-len(data)-1; i++ {
		em[i] = 0xff
	}
	copy(em[k-len(data):], data)
	raw, err := b.RSAPrivate(ctx, loc, RSANoPadding, em)
	if err != nil || !bytes.Equal(raw, sig) {
		t.Fatalf("no padding over a type-1 block = %x, %v; want the PKCS1 signature", raw, err)
	}
	// Arbitrary inputs below n, including 0 and n−1: s^e mod n == m.
	nm1 := new(big.Int).Sub(priv.N, big.NewInt(1))
	inputs := [][]byte{make([]byte, k), nm1.FillBytes(make([]byte, k))}
	for range 8 {
		m, _ := rand.Int(rand.Reader, priv.N)
		inputs = append(inputs, m.FillBytes(make([]byte, k)))
	}
	for _, in := range inputs {
		checkRawRSA(t, &priv.PublicKey, in, func() ([]byte, error) { return b.RSAPrivate(ctx, loc, RSANoPadding, in) })
	}
	for name, in := range map[string][]byte{
		"short":    make([]byte, k-1),
		"long":     make([]byte, k+1),
		"n":        priv.N.FillBytes(make([]byte, k)),
		"all ones": bytes.Repeat([]byte{0xff}, k),
	} {
		if _, err := b.RSAPrivate(ctx, loc, RSANoPadding, in); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("no padding, %s input: %v", name, err)
		}
	}
	if _, err := b.RSAPrivate(ctx, loc, RSAPadding(9), em); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("unknown padding: %v", err)
	}
}

func checkRawRSA(t *testing.T, pub *rsa.PublicKey, in []byte, op func() ([]byte, error)) {
	t.Helper()
	out, err := op()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != pub.Size() {
		t.Fatalf("raw RSA output is %d bytes, want %d", len(out), pub.Size())
	}
	s := new(big.Int).SetBytes(out)
	if s.Exp(s, big.NewInt(int64(pub.E)), pub.N).Cmp(new(big.Int).SetBytes(in)) != 0 {
		t.Fatal("raw RSA output^e mod n is not the input")
	}
}

// TestRSARawMultiPrime: deprecated multi-prime keys (only ever preloaded)
// take the non-CRT path.
func TestRSARawMultiPrime(t *testing.T) {
	//nolint:staticcheck // multi-prime keys are what is tested
	priv, err := rsa.GenerateMultiPrimeKey(rand.Reader, 3, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c := newRSACRT(priv)
	if c.p != nil {
		t.Fatal("a 3-prime key took the CRT path")
	}
	for range 4 {
		m, _ := rand.Int(rand.Reader, priv.N)
		in := m.FillBytes(make([]byte, priv.Size()))
		checkRawRSA(t, &priv.PublicKey, in, func() ([]byte, error) { return c.private(rand.Reader, in) })
	}
}

// TestRSARawFaultCheck: a corrupted CRT exponent is caught before a faulty
// signature (which would reveal a factor of n) leaves the function.
func TestRSARawFaultCheck(t *testing.T) {
	c := newRSACRT(testRSAKey(t))
	bad := *c
	bad.dp = new(big.Int).Add(c.dp, big.NewInt(2))
	in := make([]byte, c.size)
	in[c.size-1] = 5
	if _, err := bad.private(rand.Reader, in); err == nil {
		t.Fatal("a faulty CRT result was returned")
	}
}

func BenchmarkRSANoPadding(b *testing.B) {
	c := newRSACRT(testRSAKey(b))
	in := make([]byte, c.size)
	in[c.size-1] = 5
	for b.Loop() {
		if _, err := c.private(rand.Reader, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRSAPKCS1Stdlib(b *testing.B) {
	priv := testRSAKey(b)
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, make([]byte, 32)); err != nil {
			b.Fatal(err)
		}
	}
}
