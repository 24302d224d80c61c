package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestKeyFileName(t *testing.T) {
	tests := []struct{ id, want string }{
		{"device-id", "deviceid-bd732105ef89cf8edd2606a5309c8a26b7b5599a4e124a0fe6199b6b2f60e655.key"},
		{"handle-validation-key", "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba.key"},
		{"aziot_identityd_master_id", "aziotidentitydmasterid-91b92c2c06a5a5dda5fbc9c48b4d428d930b9c1b8b2956a1044ccbc7a266afc9.key"},
		{"local-ca", "localca-f71a8ad7034763bddef5cd1be2038a6b758374a08a83e88a979839841e5294d4.key"},
	}
	for _, tt := range tests {
		if got := KeyFileName(tt.id); got != tt.want {
			t.Errorf("KeyFileName(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func newStore(t *testing.T) (*FileStore, string) {
	t.Helper()
	home := t.TempDir()
	s, err := NewFileStore(home)
	if err != nil {
		t.Fatal(err)
	}
	return s, home
}

func mustSignVerify(t *testing.T, k crypto.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("warden"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T is not P-256", k.Public())
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatal("signature does not verify")
	}
}

func TestKeyPairCreateThenLoad(t *testing.T) {
	s, home := newStore(t)
	ctx := context.Background()
	k1, err := s.KeyPair(ctx, "device-id")
	if err != nil {
		t.Fatal(err)
	}
	mustSignVerify(t, k1)
	if _, ok := k1.(*ecdsa.PrivateKey); ok {
		t.Fatal("signer exposes *ecdsa.PrivateKey")
	}

	dir := filepath.Join(home, "keys")
	path := filepath.Join(dir, KeyFileName("device-id"))
	assertMode(t, dir, 0o700)
	assertMode(t, path, 0o600)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PKCS#8 PEM block: %q", data)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	}

	// A new store on the same home (a restart) loads the same key.
	s2, _ := NewFileStore(home)
	k2, err := s2.KeyPair(ctx, "device-id")
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Public().(*ecdsa.PublicKey).Equal(k2.Public()) {
		t.Fatal("reloaded key differs from created key")
	}
	other, err := s2.KeyPair(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if k1.Public().(*ecdsa.PublicKey).Equal(other.Public()) {
		t.Fatal("two IDs share a key")
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s mode = %o, want %o", path, got, want)
	}
}

func TestKeyPairReplacesMalformedFile(t *testing.T) {
	for name, content := range map[string]string{
		"empty":       "",
		"not PEM":     "garbage",
		"bad DER":     "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		t.Run(name, func(t *testing.T) {
			s, home := newStore(t)
			path := filepath.Join(home, "keys", KeyFileName("k"))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := s.KeyPair(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			mustSignVerify(t, k)
			data, _ := os.ReadFile(path)
			if _, err := parsePrivateKey(data); err != nil {
				t.Fatalf("file not rewritten with a valid key: %v", err)
			}
		})
	}
}

func TestKeyPairLoadsTraditionalECKey(t *testing.T) {
	s, home := newStore(t)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(priv)
	path := filepath.Join(home, "keys", KeyFileName("preloaded"))
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	k, err := s.KeyPair(context.Background(), "preloaded")
	if err != nil {
		t.Fatal(err)
	}
	if !priv.PublicKey.Equal(k.Public()) {
		t.Fatal("loaded key is not the file's key")
	}
}

func TestKeyPairConcurrentCreateAgrees(t *testing.T) {
	s, _ := newStore(t)
	const n = 16
	keys := make([]crypto.Signer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := s.KeyPair(context.Background(), "token-key")
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k == nil || !keys[0].Public().(*ecdsa.PublicKey).Equal(k.Public()) {
			t.Fatal("concurrent first uses returned different keys")
		}
	}
}

func TestKeyPairErrors(t *testing.T) {
	if _, err := NewFileStore(""); err == nil {
		t.Error("NewFileStore(\"\") succeeded")
	}
	s, home := newStore(t)
	if _, err := s.KeyPair(context.Background(), ""); err == nil {
		t.Error("empty key ID accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.KeyPair(ctx, "k"); err == nil {
		t.Error("cancelled context accepted")
	}
	if _, err := os.Stat(filepath.Join(home, "keys")); !os.IsNotExist(err) {
		t.Error("keys directory created without a key")
	}
}
