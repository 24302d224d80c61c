package hsm_test

// The key store over a real PKCS#11 token (SoftHSM2): the base slot comes
// first, the token does the crypto, and what comes out verifies with Go.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/hsm/pkcs11"
)

const (
	softhsmLib = "/usr/lib/softhsm/libsofthsm2.so"
	tokenPIN   = "1234"
)

// TestMain points SoftHSM at a private token directory: it reads
// SOFTHSM2_CONF once, when the library is initialised.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warden-hsm-softhsm-")
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	}
	if err == nil {
		conf := "directories.tokendir = " + filepath.Join(dir, "tokens") + "\nobjectstore.backend = file\nlog.level = ERROR\n"
		err = os.WriteFile(filepath.Join(dir, "softhsm2.conf"), []byte(conf), 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "softhsm setup:", err)
		os.Exit(1)
	}
	os.Setenv("SOFTHSM2_CONF", filepath.Join(dir, "softhsm2.conf"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var tokens atomic.Int64

// newToken initialises a SoftHSM token and returns its base-slot URI; it
// skips the test without SoftHSM (and fails it in CI).
func newToken(t *testing.T) string {
	t.Helper()
	_, libErr := os.Stat(softhsmLib)
	_, toolErr := exec.LookPath("softhsm2-util")
	if libErr != nil || toolErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("SoftHSM2 is not installed: %v %v", libErr, toolErr)
		}
		t.Skip("SoftHSM2 is not installed (apt-get install softhsm2)")
	}
	label := fmt.Sprintf("hsm-test-%d-%d", os.Getpid()%100000, tokens.Add(1))
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", tokenPIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	return (&pkcs11.URI{Token: label, PIN: tokenPIN}).String()
}

func openPKCS11(lib string, logger *slog.Logger) (hsm.PKCS11Backend, error) {
	b, err := pkcs11.New(lib, logger)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func openTokenStore(t *testing.T, slot, home string, preloaded map[string]string) *hsm.Keys {
	t.Helper()
	k, err := hsm.Open(context.Background(), hsm.Config{
		HomeDir: home, PKCS11LibPath: softhsmLib, PKCS11BaseSlot: slot, Preloaded: preloaded, OpenPKCS11: openPKCS11,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestSoftHSMSymmetric(t *testing.T) {
	ctx := context.Background()
	slot := newToken(t)
	home := t.TempDir()
	k := openTokenStore(t, slot, home, nil)

	if err := k.CreateKey(ctx, "sign", hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if err := k.CreateKey(ctx, "enc", hsm.UsageEncrypt); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(home, "keys")); len(entries) != 0 {
		t.Fatalf("keys were written to files, not the token: %v", entries)
	}
	mac1, err := k.HMACSHA256(ctx, "sign", []byte("m"))
	if err != nil || len(mac1) != 32 {
		t.Fatalf("HMAC: %x, %v", mac1, err)
	}
	// Derivation happens in the token; the result is a usable file-style key.
	derived, err := k.DeriveKey(ctx, "sign", []byte("module:gen:primary"))
	if err != nil || len(derived) != 32 {
		t.Fatalf("DeriveKey: %v", err)
	}
	if _, err := hsm.DerivedEncrypt(derived, make([]byte, 12), nil, []byte("x")); err != nil {
		t.Fatal(err)
	}

	iv := []byte("0123456789ab")
	ct, err := k.Encrypt(ctx, "enc", iv, []byte("aad"), []byte("secret"))
	if err != nil || ct[0] != 0x02 || len(ct) != 1+6+16 {
		t.Fatalf("Encrypt: %x, %v", ct, err)
	}
	if pt, err := k.Decrypt(ctx, "enc", iv, []byte("aad"), ct); err != nil || string(pt) != "secret" {
		t.Fatalf("Decrypt: %q, %v", pt, err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := k.Decrypt(ctx, "enc", iv, []byte("aad"), ct); !errors.Is(err, hsm.ErrInvalidParameter) {
		t.Fatalf("wrong tag: %v", err)
	}

	// An imported key is the caller's key: HMAC matches Go's.
	key := bytes.Repeat([]byte{7}, 32)
	if err := k.ImportKey(ctx, "imported", key, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if mac, _ := k.HMACSHA256(ctx, "imported", []byte("m")); !bytes.Equal(mac, hsm.DerivedHMACSHA256(key, []byte("m"))) {
		t.Fatal("token HMAC differs from HMAC-SHA256 of the imported key")
	}

	// A restart finds the same keys.
	k2 := openTokenStore(t, slot, home, nil)
	if mac2, err := k2.HMACSHA256(ctx, "sign", []byte("m")); err != nil || !bytes.Equal(mac1, mac2) {
		t.Fatalf("HMAC after restart: %v", err)
	}
	if err := k2.DeleteKey(ctx, "sign"); err != nil {
		t.Fatal(err)
	}
	if err := k2.LoadKey(ctx, "sign"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("LoadKey after delete: %v", err)
	}
}

func TestSoftHSMKeyPairs(t *testing.T) {
	ctx := context.Background()
	slot := newToken(t)
	k := openTokenStore(t, slot, t.TempDir(), nil)
	digest := sha256.Sum256([]byte("warden"))

	for _, alg := range []hsm.Algorithm{hsm.ECP256, hsm.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			id := "pair-" + string(alg)
			if err := k.CreateKeyPair(ctx, id, []hsm.Algorithm{alg}); err != nil {
				t.Fatal(err)
			}
			s, err := k.Signer(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Fatalf("ECDSA: %v", err)
				}
			case *rsa.PublicKey:
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
					t.Fatalf("PKCS1: %v", err)
				}
				opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
				sig, err = s.Sign(rand.Reader, digest[:], opts)
				if err != nil || rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, opts) != nil {
					t.Fatalf("PSS through CKM_RSA_X509: %v", err)
				}
				if _, err := k.RSAPrivate(ctx, id, hsm.RSANoPadding, bytes.Repeat([]byte{0xff}, pub.Size())); !errors.Is(err, hsm.ErrInvalidParameter) {
					t.Fatalf("raw RSA input not below n: %v", err)
				}
			default:
				t.Fatalf("public key %T", pub)
			}
		})
	}

	want, _ := k.PublicKey(ctx, "pair-ec-p256")
	if err := k.MoveKeyPair(ctx, "pair-ec-p256", "moved"); err != nil {
		t.Fatal(err)
	}
	if got, err := k.PublicKey(ctx, "moved"); err != nil || !want.(*ecdsa.PublicKey).Equal(got) {
		t.Fatalf("moved key pair: %v", err)
	}
	if err := k.LoadKeyPair(ctx, "pair-ec-p256"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("source after move: %v", err)
	}
	if err := k.DeleteKeyPair(ctx, "moved"); err != nil {
		t.Fatal(err)
	}
	if err := k.LoadKeyPair(ctx, "moved"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// TestSoftHSMHandles: the handle-validation key lives in the token.
func TestSoftHSMHandles(t *testing.T) {
	ctx := context.Background()
	slot := newToken(t)
	home := t.TempDir()
	h := hsm.NewHandles(openTokenStore(t, slot, home, nil))
	handle, err := h.Issue(ctx, hsm.KeyRef{Kind: hsm.KindKeyPair, ID: "device-id"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, "keys", hsm.KeyFileName(hsm.HandleValidationKeyID))); !os.IsNotExist(err) {
		t.Fatal("the validation key went to a file, not the token")
	}
	h2 := hsm.NewHandles(openTokenStore(t, slot, home, nil))
	if ref, err := h2.Verify(ctx, handle); err != nil || ref.ID != "device-id" {
		t.Fatalf("Verify after restart: %+v, %v", ref, err)
	}
	if _, err := h2.Verify(ctx, strings.Replace(handle, "sig=", "sig=AAAA", 1)); !errors.Is(err, hsm.ErrInvalidHandle) {
		t.Fatalf("tampered: %v", err)
	}
}

// TestSoftHSMPreloaded: a preloaded pkcs11: key is used where it is, and
// without a library configured it is aziot's invalid parameter.
func TestSoftHSMPreloaded(t *testing.T) {
	ctx := context.Background()
	slot := newToken(t)
	u, err := pkcs11.ParseURI(slot)
	if err != nil {
		t.Fatal(err)
	}
	pre := u.WithObject("est-id").String()
	k := openTokenStore(t, slot, t.TempDir(), nil)
	if err := k.CreateKeyPair(ctx, "est-id", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	want, _ := k.PublicKey(ctx, "est-id")

	lib, err := hsm.Open(ctx, hsm.Config{PKCS11LibPath: softhsmLib, OpenPKCS11: openPKCS11,
		Preloaded: map[string]string{"identity": pre}})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if got, err := lib.PublicKey(ctx, "identity"); err != nil || !want.(*ecdsa.PublicKey).Equal(got) {
		t.Fatalf("preloaded token key: %v", err)
	}
	nolib, _ := hsm.Open(ctx, hsm.Config{Preloaded: map[string]string{"identity": pre}})
	if err := nolib.LoadKeyPair(ctx, "identity"); !errors.Is(err, hsm.ErrInvalidParameter) ||
		!strings.Contains(err.Error(), "pre-loaded key requires PKCS#11 lib path to be configured") {
		t.Fatalf("preloaded token key without a library: %v", err)
	}
	// A wrong PIN fails Open (on a token this process has not logged in to:
	// PKCS#11 login state is per process).
	fresh := newToken(t)
	if _, err := hsm.Open(ctx, hsm.Config{PKCS11LibPath: softhsmLib, PKCS11BaseSlot: strings.Replace(fresh, tokenPIN, "0000", 1),
		OpenPKCS11: openPKCS11}); err == nil || strings.Contains(err.Error(), "0000") {
		t.Fatalf("Open with a wrong PIN: %v", err)
	}
}

// TestSoftHSMImportFallbackReplaces: an import the token cannot take goes to
// the file, and the key it replaces in the token goes away: the imported
// key is the one in use, not the old one the token still held.
func TestSoftHSMImportFallbackReplaces(t *testing.T) {
	ctx := context.Background()
	k := openTokenStore(t, newToken(t), t.TempDir(), nil)
	if err := k.CreateKey(ctx, "k", hsm.UsageSign); err != nil { // in the token
		t.Fatal(err)
	}
	key := []byte("a 16-byte secret") // SoftHSM will not HMAC with it
	if err := k.ImportKey(ctx, "k", key, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	mac, err := k.HMACSHA256(ctx, "k", []byte("m"))
	if err != nil || !bytes.Equal(mac, hsm.DerivedHMACSHA256(key, []byte("m"))) {
		t.Fatalf("HMAC after the import: %x, %v; the old token key is still in use", mac, err)
	}
}
