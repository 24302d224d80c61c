package pkcs11

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// onToken runs fn on a session of base's token.
func onToken(t *testing.T, b *Backend, base *URI, fn func(tok *token, s pkcs11.SessionHandle) error) {
	t.Helper()
	err := b.do(context.Background(), base.WithObject("x").String(), "test", func(tok *token, s pkcs11.SessionHandle, _ string) error {
		return fn(tok, s)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rawPair generates an EC P-256 pair labelled label with CKA_ID id, as
// another tool (or an older Warden) would, bypassing the backend.
func rawPair(t *testing.T, b *Backend, base *URI, label string, id []byte) {
	t.Helper()
	onToken(t, b, base, func(tok *token, s pkcs11.SessionHandle) error {
		m, pub, priv, err := pairTemplates(hsm.ECP256, label, id)
		if err != nil {
			return err
		}
		_, _, err = tok.b.p.GenerateKeyPair(s, mech(m, nil), pub, priv)
		return err
	})
}

// interruptMove does the first steps of moving the pair from → to, as
// MoveKeyPair does, and stops as a crash would: the pair at to destroyed,
// the private key relabelled, the public key not.
func interruptMove(t *testing.T, b *Backend, base *URI, from, to string) {
	t.Helper()
	onToken(t, b, base, func(tok *token, s pkcs11.SessionHandle) error {
		if err := tok.destroy(s, to, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY); err != nil {
			return err
		}
		hs, err := tok.labelled(s, pkcs11.CKO_PRIVATE_KEY, from)
		if err != nil || len(hs) != 1 {
			t.Fatalf("private keys labelled %s: %d, %v", from, len(hs), err)
		}
		tok.forget(from)
		return tok.b.p.SetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, to)})
	})
}

// pairIDs returns the CKA_IDs of the objects of class labelled label.
func pairIDs(t *testing.T, b *Backend, base *URI, class uint, label string) [][]byte {
	t.Helper()
	var ids [][]byte
	onToken(t, b, base, func(tok *token, s pkcs11.SessionHandle) error {
		hs, err := tok.labelled(s, class, label)
		for _, h := range hs {
			a, err := tok.attrs(s, h, pkcs11.CKA_ID)
			if err != nil {
				return err
			}
			ids = append(ids, a[0].Value)
		}
		return err
	})
	return ids
}

func TestPairIDs(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	for i, alg := range []hsm.Algorithm{hsm.ECP256, hsm.RSA2048} {
		label := "id-" + string(rune('a'+i))
		if err := b.CreateKeyPair(ctx, base.WithObject(label).String(), []hsm.Algorithm{alg}); err != nil {
			t.Fatal(err)
		}
		priv, pub := pairIDs(t, b, base, pkcs11.CKO_PRIVATE_KEY, label), pairIDs(t, b, base, pkcs11.CKO_PUBLIC_KEY, label)
		if len(priv) != 1 || len(pub) != 1 || !isPairID(priv[0]) || !bytes.Equal(priv[0], pub[0]) {
			t.Fatalf("%s: CKA_IDs private %q, public %q; want one shared pair ID", alg, priv, pub)
		}
	}
	// A pair made without an ID gets one when it is moved.
	rawPair(t, b, base, "legacy", nil)
	if err := b.MoveKeyPair(ctx, base.WithObject("legacy").String(), base.WithObject("legacy-moved").String()); err != nil {
		t.Fatal(err)
	}
	priv, pub := pairIDs(t, b, base, pkcs11.CKO_PRIVATE_KEY, "legacy-moved"), pairIDs(t, b, base, pkcs11.CKO_PUBLIC_KEY, "legacy-moved")
	if len(priv) != 1 || len(pub) != 1 || !isPairID(priv[0]) || !bytes.Equal(priv[0], pub[0]) {
		t.Fatalf("moved legacy pair: CKA_IDs private %q, public %q; want one shared pair ID", priv, pub)
	}
	// A pair whose public half got its ID before a crash gets the same ID
	// on its private half at the next move.
	rawPair(t, b, base, "half-id", nil)
	id := newPairID()
	onToken(t, b, base, func(tok *token, s pkcs11.SessionHandle) error {
		hs, err := tok.labelled(s, pkcs11.CKO_PUBLIC_KEY, "half-id")
		if err != nil || len(hs) != 1 {
			t.Fatalf("public keys labelled half-id: %d, %v", len(hs), err)
		}
		return tok.b.p.SetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)})
	})
	if err := b.MoveKeyPair(ctx, base.WithObject("half-id").String(), base.WithObject("half-id-moved").String()); err != nil {
		t.Fatal(err)
	}
	priv, pub = pairIDs(t, b, base, pkcs11.CKO_PRIVATE_KEY, "half-id-moved"), pairIDs(t, b, base, pkcs11.CKO_PUBLIC_KEY, "half-id-moved")
	if len(priv) != 1 || len(pub) != 1 || !bytes.Equal(priv[0], id) || !bytes.Equal(pub[0], id) {
		t.Fatalf("moved half-ID pair: CKA_IDs private %q, public %q; want both %q", priv, pub, id)
	}
}

// TestInterruptedMove: a move stopped between relabelling the private and
// the public key is finished by the next lookup of either label, so a
// rotated key is neither lost nor split.
func TestInterruptedMove(t *testing.T) {
	digest := sha256.Sum256([]byte("after the crash"))
	for _, first := range []string{"destination", "source"} {
		t.Run("lookup "+first+" first", func(t *testing.T) {
			b, base := newTestBackend(t)
			ctx := context.Background()
			from, to := base.WithObject("device-id-temp").String(), base.WithObject("device-id").String()
			if err := b.CreateKeyPair(ctx, to, []hsm.Algorithm{hsm.RSA2048}); err != nil {
				t.Fatal(err)
			}
			if err := b.CreateKeyPair(ctx, from, []hsm.Algorithm{hsm.ECP256}); err != nil {
				t.Fatal(err)
			}
			newPub, err := b.PublicKey(ctx, from)
			if err != nil {
				t.Fatal(err)
			}
			interruptMove(t, b, base, "device-id-temp", "device-id")

			srcOK, dstOK := true, false
			check := map[string]func(){
				"source": func() {
					srcOK, err = b.KeyPairExists(ctx, from)
					if err != nil {
						t.Fatal(err)
					}
				},
				"destination": func() {
					dstOK, err = b.KeyPairExists(ctx, to)
					if err != nil {
						t.Fatal(err)
					}
				},
			}
			check[first]()
			for k, f := range check {
				if k != first {
					f()
				}
			}
			if srcOK || !dstOK {
				t.Fatalf("after the interrupted move: source pair %v, destination pair %v; want false, true", srcOK, dstOK)
			}
			got, err := b.PublicKey(ctx, to)
			if err != nil {
				t.Fatal(err)
			}
			if !newPub.(*ecdsa.PublicKey).Equal(got) {
				t.Fatal("the destination's public key is not the moved one")
			}
			sig, err := b.SignECDSA(ctx, to, digest[:])
			if err != nil || !ecdsa.VerifyASN1(newPub.(*ecdsa.PublicKey), digest[:], sig) {
				t.Fatalf("signing with the moved key: %v", err)
			}
			for _, c := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
				if n := len(objects(t, b, base, c, "device-id-temp")); n != 0 {
					t.Fatalf("%d objects of class %d still labelled device-id-temp", n, c)
				}
			}
			// Creating the source again makes a new pair and leaves the
			// destination alone.
			if err := b.CreateKeyPair(ctx, from, []hsm.Algorithm{hsm.ECP256}); err != nil {
				t.Fatal(err)
			}
			if got, err := b.PublicKey(ctx, to); err != nil || !newPub.(*ecdsa.PublicKey).Equal(got) {
				t.Fatalf("the destination changed when the source was created again: %v", err)
			}
		})
	}
}

// TestForeignIDsUntouched: halves whose CKA_ID Warden did not make are
// never paired up by ID, even when a lone half looks like a broken move.
func TestForeignIDsUntouched(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	rawPair(t, b, base, "foreign", []byte("01"))
	interruptMove(t, b, base, "foreign", "foreign-dest")
	if ok, err := b.KeyPairExists(ctx, base.WithObject("foreign-dest").String()); ok || err != nil {
		t.Fatalf("KeyPairExists(foreign-dest) = %v, %v; want false", ok, err)
	}
	if n := len(objects(t, b, base, pkcs11.CKO_PUBLIC_KEY, "foreign")); n != 1 {
		t.Fatalf("%d public keys labelled foreign, want 1 (left where it was)", n)
	}
	if n := len(objects(t, b, base, pkcs11.CKO_PRIVATE_KEY, "foreign-dest")); n != 1 {
		t.Fatalf("%d private keys labelled foreign-dest, want 1 (left where it was)", n)
	}
}

// TestFinishMoveKeepsOnePublicKey: a lone public key whose private key sits
// under a label that already has a public key stays where it is.
func TestFinishMoveKeepsOnePublicKey(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	if err := b.CreateKeyPair(ctx, base.WithObject("src").String(), []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	interruptMove(t, b, base, "src", "dst")
	// Another public key lands on dst before the move is finished.
	rawPair(t, b, base, "other", nil)
	onToken(t, b, base, func(tok *token, s pkcs11.SessionHandle) error {
		hs, err := tok.labelled(s, pkcs11.CKO_PUBLIC_KEY, "other")
		if err != nil || len(hs) != 1 {
			t.Fatalf("public keys labelled other: %d, %v", len(hs), err)
		}
		return tok.b.p.SetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "dst")})
	})
	if ok, err := b.KeyPairExists(ctx, base.WithObject("src").String()); ok || err != nil {
		t.Fatalf("KeyPairExists(src) = %v, %v; want false", ok, err)
	}
	if n := len(objects(t, b, base, pkcs11.CKO_PUBLIC_KEY, "dst")); n != 1 {
		t.Fatalf("%d public keys labelled dst, want 1", n)
	}
	if n := len(objects(t, b, base, pkcs11.CKO_PUBLIC_KEY, "src")); n != 1 {
		t.Fatalf("%d public keys labelled src, want 1 (left where it was)", n)
	}
}
