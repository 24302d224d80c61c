package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// sha256DigestInfo is the DER DigestInfo prefix of a SHA-256 hash (RFC 8017).
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

func TestKeyPairs(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	tests := []struct {
		algs []hsm.Algorithm
		want string // "ec", "rsa-2048", "rsa-4096"
	}{
		{[]hsm.Algorithm{hsm.ECP256}, "ec"},
		{[]hsm.Algorithm{hsm.RSA2048}, "rsa-2048"},
		{[]hsm.Algorithm{hsm.RSA4096, hsm.ECP256}, "rsa-4096"},
		{[]hsm.Algorithm{"ed25519", hsm.RSA2048, hsm.ECP256}, "rsa-2048"}, // unknown first entry skipped
		{hsm.ParsePreferredAlgorithms(""), "ec"},
	}
	for i, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			label := "pair-" + string(rune('a'+i))
			loc := base.WithObject(label).String()
			if ok, err := b.KeyPairExists(ctx, loc); ok || err != nil {
				t.Fatalf("KeyPairExists before create = %v, %v", ok, err)
			}
			if err := b.CreateKeyPair(ctx, loc, tt.algs); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.KeyPairExists(ctx, loc); !ok || err != nil {
				t.Fatalf("KeyPairExists = %v, %v", ok, err)
			}
			pub, err := b.PublicKey(ctx, loc)
			if err != nil {
				t.Fatal(err)
			}
			// Private keys are sensitive and never extractable.
			attrs := boolAttrs(t, b, base, pkcs11.CKO_PRIVATE_KEY, label,
				pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE,
				pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE)
			if want := []bool{true, false, true, true, true, true}; !equalBools(attrs, want) {
				t.Errorf("sensitive, extractable, token, private, never-extractable, always-sensitive = %v, want %v", attrs, want)
			}
			// CreateKeyPair on an existing pair keeps it.
			if err := b.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.RSA2048}); err != nil {
				t.Fatal(err)
			}
			if again, _ := b.PublicKey(ctx, loc); !again.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Fatal("CreateKeyPair replaced an existing key pair")
			}

			digest := sha256.Sum256([]byte("CSR to be signed"))
			switch pk := pub.(type) {
			case *ecdsa.PublicKey:
				if tt.want != "ec" {
					t.Fatalf("got an EC key, want %s", tt.want)
				}
				sig, err := b.SignECDSA(ctx, loc, digest[:])
				if err != nil {
					t.Fatal(err)
				}
				if !ecdsa.VerifyASN1(pk, digest[:], sig) {
					t.Fatalf("ecdsa.VerifyASN1 rejects the token's signature %x", sig)
				}
				if _, err := b.RSAPrivate(ctx, loc, hsm.RSAPKCS1, digest[:]); !errors.Is(err, hsm.ErrInvalidParameter) {
					t.Fatalf("RSAPrivate with an EC key: %v, want ErrInvalidParameter", err)
				}
			case *rsa.PublicKey:
				if want := "rsa-" + big.NewInt(int64(pk.N.BitLen())).String(); want != tt.want || pk.E != 65537 {
					t.Fatalf("got %s e=%d, want %s e=65537", want, pk.E, tt.want)
				}
				testRSA(t, b, loc, pk, digest[:])
				if _, err := b.SignECDSA(ctx, loc, digest[:]); !errors.Is(err, hsm.ErrInvalidParameter) {
					t.Fatalf("SignECDSA with an RSA key: %v, want ErrInvalidParameter", err)
				}
			default:
				t.Fatalf("PublicKey returned %T", pub)
			}

			if err := b.DeleteKeyPair(ctx, loc); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.KeyPairExists(ctx, loc); ok || err != nil {
				t.Fatalf("KeyPairExists after delete = %v, %v", ok, err)
			}
			for _, c := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
				if hs := objects(t, b, base, c, label); len(hs) != 0 {
					t.Fatalf("%d objects of class %d left after DeleteKeyPair", len(hs), c)
				}
			}
			if _, err := b.SignECDSA(ctx, loc, digest[:]); !errors.Is(err, hsm.ErrNotFound) {
				t.Fatalf("sign with a deleted key: %v, want ErrNotFound", err)
			}
			if _, err := b.PublicKey(ctx, loc); !errors.Is(err, hsm.ErrNotFound) {
				t.Fatalf("PublicKey of a deleted key: %v, want ErrNotFound", err)
			}
			if err := b.DeleteKeyPair(ctx, loc); err != nil {
				t.Fatalf("deleting an absent key pair: %v", err)
			}
		})
	}

	t.Run("no algorithm", func(t *testing.T) {
		loc := base.WithObject("none").String()
		for _, algs := range [][]hsm.Algorithm{nil, {"ed25519", "ec-p384"}} {
			err := b.CreateKeyPair(ctx, loc, algs)
			if !errors.Is(err, hsm.ErrUnsupported) || !strings.Contains(err.Error(), "no algorithm succeeded") {
				t.Fatalf("CreateKeyPair(%v): %v, want ErrUnsupported", algs, err)
			}
		}
	})
}

// testRSA checks both RSA private operations against the public key.
func testRSA(t *testing.T, b *Backend, loc string, pk *rsa.PublicKey, digest []byte) {
	t.Helper()
	ctx := context.Background()
	// RSA-PKCS1: the token pads the caller's DigestInfo with type 1.
	di := append(bytes.Clone(sha256DigestInfo), digest...)
	sig, err := b.RSAPrivate(ctx, loc, hsm.RSAPKCS1, di)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != pk.Size() {
		t.Fatalf("RSA-PKCS1 output is %d bytes, want %d", len(sig), pk.Size())
	}
	if err := rsa.VerifyPKCS1v15(pk, 0, di, sig); err != nil {
		t.Fatalf("rsa.VerifyPKCS1v15(hash 0, DigestInfo): %v", err)
	}
	if err := rsa.VerifyPKCS1v15(pk, crypto.SHA256, digest, sig); err != nil {
		t.Fatalf("rsa.VerifyPKCS1v15(SHA-256): %v", err)
	}
	// RSA-NO-PADDING: m^d, checked by (m^d)^e mod n = m.
	m := make([]byte, pk.Size())
	rand.Read(m)
	m[0] = 0x01 // below n
	c, err := b.RSAPrivate(ctx, loc, hsm.RSANoPadding, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != pk.Size() {
		t.Fatalf("RSA-NO-PADDING output is %d bytes, want %d", len(c), pk.Size())
	}
	back := new(big.Int).Exp(new(big.Int).SetBytes(c), big.NewInt(int64(pk.E)), pk.N)
	if back.Cmp(new(big.Int).SetBytes(m)) != 0 {
		t.Fatal("RSA-NO-PADDING: c^e mod n != m")
	}
	if _, err := b.RSAPrivate(ctx, loc, hsm.RSAPadding(99), m); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("unknown padding: %v, want ErrInvalidParameter", err)
	}
	if _, err := b.RSAPrivate(ctx, loc, hsm.RSAPKCS1, make([]byte, pk.Size())); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("RSA-PKCS1 input too long for the padding: %v, want ErrInvalidParameter", err)
	}
}

func TestMoveKeyPair(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	from, to := base.WithObject("device-id-next").String(), base.WithObject("device-id").String()
	if err := b.CreateKeyPair(ctx, to, []hsm.Algorithm{hsm.RSA2048}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateKeyPair(ctx, from, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	// Warm the handle cache of both labels, so the move must invalidate it.
	digest := sha256.Sum256([]byte("x"))
	if _, err := b.RSAPrivate(ctx, to, hsm.RSAPKCS1, digest[:]); err != nil {
		t.Fatal(err)
	}
	newPub, err := b.PublicKey(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.MoveKeyPair(ctx, from, to); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.KeyPairExists(ctx, from); ok {
		t.Fatal("the source still exists after the move")
	}
	got, err := b.PublicKey(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if !newPub.(*ecdsa.PublicKey).Equal(got) {
		t.Fatal("the destination does not hold the moved key")
	}
	sig, err := b.SignECDSA(ctx, to, digest[:])
	if err != nil || !ecdsa.VerifyASN1(newPub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("signing with the moved key: %v", err)
	}
	for _, c := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		if n := len(objects(t, b, base, c, "device-id")); n != 1 {
			t.Fatalf("%d objects of class %d labelled device-id, want 1 (the old pair must be gone)", n, c)
		}
	}
	if err := b.MoveKeyPair(ctx, from, to); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("moving an absent pair: %v, want ErrNotFound", err)
	}
	if err := b.MoveKeyPair(ctx, to, to); err != nil {
		t.Fatalf("moving a pair onto itself: %v", err)
	}
	if ok, _ := b.KeyPairExists(ctx, to); !ok {
		t.Fatal("moving a pair onto itself lost it")
	}
	if err := b.MoveKeyPair(ctx, to, "pkcs11:slot-id=4294967295;object=x?pin-value=1234"); err == nil {
		t.Fatal("moving to a missing token succeeded")
	}
	if err := b.MoveKeyPair(ctx, to, "file:///x"); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("moving to a file location: %v, want ErrInvalidParameter", err)
	}
}

// TestConcurrentSign signs from 16 goroutines at once; every signature must
// verify, and the pool must stay within its bound.
func TestConcurrentSign(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	loc := base.WithObject("concurrent").String()
	if err := b.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	pub, err := b.PublicKey(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	hmacLoc := base.WithObject("concurrent-hmac").String()
	if err := b.CreateKey(ctx, hmacLoc, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				digest := sha256.Sum256([]byte{byte(g), byte(i)})
				sig, err := b.SignECDSA(ctx, loc, digest[:])
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
					errs <- errors.New("a concurrent signature does not verify")
					return
				}
				if _, err := b.HMACSHA256(ctx, hmacLoc, digest[:]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	tok, err := b.token(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tok.idle); n < 1 || n > cap(tok.permits) {
		t.Fatalf("%d idle sessions, want 1..%d", n, cap(tok.permits))
	}
	t.Logf("%d sessions open after 16 concurrent signers (bound %d)", len(tok.idle), cap(tok.permits))
}
