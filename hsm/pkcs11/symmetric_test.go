package pkcs11

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// objects returns the handles of the objects of class labelled label,
// asking the token directly.
func objects(t *testing.T, b *Backend, base *URI, class uint, label string) []pkcs11.ObjectHandle {
	t.Helper()
	var hs []pkcs11.ObjectHandle
	err := b.do(context.Background(), base.WithObject(label).String(), "list", func(tok *token, s pkcs11.SessionHandle, _ string) error {
		var err error
		hs, err = tok.labelled(s, class, label)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// boolAttrs reads boolean attributes of the single object of class labelled label.
func boolAttrs(t *testing.T, b *Backend, base *URI, class uint, label string, types ...uint) []bool {
	t.Helper()
	var out []bool
	err := b.do(context.Background(), base.WithObject(label).String(), "read", func(tok *token, s pkcs11.SessionHandle, l string) error {
		o, err := tok.find(s, class, l)
		if err != nil {
			return err
		}
		a, err := tok.attrs(s, o.h, types...)
		for _, v := range a {
			out = append(out, len(v.Value) == 1 && v.Value[0] != 0)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHMAC(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	msg := []byte("sr=myhub.azure-devices.net%2Fdevices%2Fd1\n1700000000")
	// SoftHSM cannot use HMAC-SHA256 keys under 32 bytes: the key store
	// must be told to fall back to the file location.
	err := b.ImportKey(ctx, base.WithObject("short").String(), make([]byte, 16), hsm.UsageSign)
	if !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("ImportKey of a 16-byte HMAC key: %v, want ErrUnsupported", err)
	}
	if hs := objects(t, b, base, pkcs11.CKO_SECRET_KEY, "short"); len(hs) != 0 {
		t.Fatalf("the unusable key was left on the token")
	}
	for _, n := range []int{32, 48, 64, 100} {
		key := make([]byte, n)
		rand.Read(key)
		loc := base.WithObject("imported-hmac").String()
		if err := b.ImportKey(ctx, loc, key, hsm.UsageSign); err != nil {
			t.Fatalf("ImportKey(%d bytes): %v", n, err)
		}
		got, err := b.HMACSHA256(ctx, loc, msg)
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		if want := m.Sum(nil); !bytes.Equal(got, want) {
			t.Fatalf("%d-byte key: token HMAC %x, Go HMAC %x", n, got, want)
		}
		// ImportKey replaced the previous key: one object with the label.
		if hs := objects(t, b, base, pkcs11.CKO_SECRET_KEY, "imported-hmac"); len(hs) != 1 {
			t.Fatalf("%d secret objects labelled imported-hmac after import, want 1", len(hs))
		}
	}

	// A generated HMAC key: sensitive, non-extractable, stable across CreateKey.
	loc := base.WithObject("device-id").String()
	if err := b.CreateKey(ctx, loc, hsm.UsageDerive|hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	mac1, err := b.HMACSHA256(ctx, loc, msg)
	if err != nil || len(mac1) != 32 {
		t.Fatalf("HMAC with a generated key: %x, %v", mac1, err)
	}
	if err := b.CreateKey(ctx, loc, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if mac2, _ := b.HMACSHA256(ctx, loc, msg); !bytes.Equal(mac1, mac2) {
		t.Fatal("CreateKey replaced an existing key")
	}
	attrs := boolAttrs(t, b, base, pkcs11.CKO_SECRET_KEY, "device-id",
		pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE)
	if want := []bool{true, false, true, true}; !equalBools(attrs, want) {
		t.Errorf("sensitive, extractable, token, private = %v, want %v", attrs, want)
	}
	if ok, err := b.KeyExists(ctx, loc); !ok || err != nil {
		t.Fatalf("KeyExists = %v, %v", ok, err)
	}
	if err := b.DeleteKey(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.KeyExists(ctx, loc); ok || err != nil {
		t.Fatalf("KeyExists after delete = %v, %v", ok, err)
	}
	if _, err := b.HMACSHA256(ctx, loc, msg); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("HMAC with a deleted key: %v, want ErrNotFound", err)
	}
	if err := b.DeleteKey(ctx, loc); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	if err := b.CreateKey(ctx, loc, hsm.UsageEncrypt|hsm.UsageSign); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("CreateKey with usage sign+encrypt: %v, want ErrInvalidParameter", err)
	}
}

func equalBools(a, b []bool) bool {
	return len(a) == len(b) && string(boolBytes(a)) == string(boolBytes(b))
}

func boolBytes(a []bool) []byte {
	out := make([]byte, len(a))
	for i, v := range a {
		if v {
			out[i] = 1
		}
	}
	return out
}

func TestAEAD(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	iv := make([]byte, 12)
	rand.Read(iv)
	aad := []byte("aad")
	pt := []byte("the identity service master key protects module keys")

	for _, n := range []int{16, 32} {
		key := make([]byte, n)
		rand.Read(key)
		loc := base.WithObject("imported-aes").String()
		if err := b.ImportKey(ctx, loc, key, hsm.UsageEncrypt); err != nil {
			t.Fatalf("ImportKey AES-%d: %v", 8*n, err)
		}
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)

		ct, err := b.EncryptAEAD(ctx, loc, iv, aad, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct) != len(pt)+16 {
			t.Fatalf("ciphertext is %d bytes, want %d (ct||tag)", len(ct), len(pt)+16)
		}
		if got, err := gcm.Open(nil, iv, ct, aad); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Go cannot open the token's ciphertext: %v", err)
		}
		goCT := gcm.Seal(nil, iv, pt, aad)
		if got, err := b.DecryptAEAD(ctx, loc, iv, aad, goCT); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("the token cannot open Go's ciphertext: %q, %v", got, err)
		}
		bad := bytes.Clone(goCT)
		bad[len(bad)-1] ^= 1
		if _, err := b.DecryptAEAD(ctx, loc, iv, aad, bad); !errors.Is(err, hsm.ErrInvalidParameter) {
			t.Fatalf("wrong tag: %v, want ErrInvalidParameter", err)
		}
		if _, err := b.DecryptAEAD(ctx, loc, iv, []byte("other aad"), goCT); !errors.Is(err, hsm.ErrInvalidParameter) {
			t.Fatalf("wrong AAD: %v, want ErrInvalidParameter", err)
		}
		if _, err := b.DecryptAEAD(ctx, loc, iv, aad, goCT[:10]); !errors.Is(err, hsm.ErrInvalidParameter) {
			t.Fatalf("short ciphertext: %v, want ErrInvalidParameter", err)
		}
	}

	// The session that saw the failed decryption is still usable.
	loc := base.WithObject("aziot_identityd_master_id").String()
	if err := b.CreateKey(ctx, loc, hsm.UsageEncrypt); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ct, err := b.EncryptAEAD(ctx, loc, iv, nil, pt)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := b.DecryptAEAD(ctx, loc, iv, nil, ct); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("round trip with a generated AES key: %q, %v", got, err)
		}
	}
	attrs := boolAttrs(t, b, base, pkcs11.CKO_SECRET_KEY, "aziot_identityd_master_id",
		pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE)
	if !equalBools(attrs, []bool{true, false}) {
		t.Errorf("sensitive, extractable = %v", attrs)
	}
	// AES-256 was accepted.
	err := b.do(ctx, loc, "read", func(tok *token, s pkcs11.SessionHandle, l string) error {
		o, err := tok.find(s, pkcs11.CKO_SECRET_KEY, l)
		if err != nil {
			return err
		}
		a, err := tok.attrs(s, o.h, pkcs11.CKA_VALUE_LEN)
		if err == nil && ulong(a[0].Value) != 32 {
			t.Errorf("CKA_VALUE_LEN = %d, want 32", ulong(a[0].Value))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// An HMAC key is not an AES key.
	hmacLoc := base.WithObject("hmac").String()
	if err := b.CreateKey(ctx, hmacLoc, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if _, err := b.EncryptAEAD(ctx, hmacLoc, iv, nil, pt); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("AES-GCM with a generic secret: %v, want ErrInvalidParameter", err)
	}
	if _, err := b.EncryptAEAD(ctx, loc, nil, nil, pt); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("no IV: %v, want ErrInvalidParameter", err)
	}
	if _, err := b.EncryptAEAD(ctx, base.WithObject("absent").String(), iv, nil, pt); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("absent key: %v, want ErrNotFound", err)
	}
}

func TestImportKeyUnsupported(t *testing.T) {
	b, base := newTestBackend(t)
	// SoftHSM refuses a 5-byte AES key: the key store must be told to fall back.
	err := b.ImportKey(context.Background(), base.WithObject("odd").String(), []byte("12345"), hsm.UsageEncrypt)
	if !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("ImportKey of a 5-byte AES key: %v, want ErrUnsupported", err)
	}
	if !strings.Contains(err.Error(), `pkcs11: import key "odd" on token "`) || !strings.Contains(err.Error(), "CKR_") {
		t.Errorf("message: %v", err)
	}
}
