package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func pemKey(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestFileSymmetricKeys(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	dir := filepath.Join(t.TempDir(), "keys")
	loc := filepath.Join(dir, "k.key")

	if ok, err := b.KeyExists(ctx, loc); ok || err != nil {
		t.Fatalf("KeyExists before create = %v, %v", ok, err)
	}
	if _, err := b.HMACSHA256(ctx, loc, []byte("m")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("HMAC of a missing key: %v, want ErrNotFound", err)
	}
	if err := b.CreateKey(ctx, loc, UsageSign); err != nil {
		t.Fatal(err)
	}
	assertMode(t, dir, 0o700)
	assertMode(t, loc, 0o600)
	key, _ := os.ReadFile(loc)
	if len(key) != 32 {
		t.Fatalf("generated key is %d bytes, want 32", len(key))
	}
	// Create-if-not-exists keeps the key.
	if err := b.CreateKey(ctx, loc, UsageEncrypt); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(loc); !bytes.Equal(again, key) {
		t.Fatal("CreateKey replaced an existing key")
	}
	sig, err := b.HMACSHA256(ctx, loc, []byte("msg"))
	if err != nil || !bytes.Equal(sig, DerivedHMACSHA256(key, []byte("msg"))) {
		t.Fatalf("HMAC = %x, %v", sig, err)
	}

	// Import overwrites, with any length, raw bytes.
	for _, imported := range [][]byte{[]byte("short"), bytes.Repeat([]byte{7}, 64)} {
		if err := b.ImportKey(ctx, loc, imported, UsageSign); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(loc); !bytes.Equal(got, imported) {
			t.Fatalf("imported file = %x", got)
		}
		assertMode(t, loc, 0o600)
		sig, _ := b.HMACSHA256(ctx, loc, []byte("msg"))
		if !bytes.Equal(sig, DerivedHMACSHA256(imported, []byte("msg"))) {
			t.Fatal("HMAC after import uses a stale (cached) key")
		}
	}
	if err := b.ImportKey(ctx, loc, nil, UsageSign); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("import of an empty key: %v", err)
	}
	if err := b.DeleteKey(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteKey(ctx, loc); err != nil {
		t.Fatalf("delete of an absent key: %v", err)
	}
	if ok, _ := b.KeyExists(ctx, loc); ok {
		t.Fatal("key exists after delete")
	}
	if err := b.CreateKey(ctx, "relative/k.key", UsageSign); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("relative location: %v", err)
	}
}

// TestFileMalformed: aziot's rule (PR #612): an empty key file, or a
// key-pair file that is not a PEM private key, is missing on create paths
// (replaced) and an error elsewhere.
func TestFileMalformed(t *testing.T) {
	ctx := context.Background()
	pairCases := map[string]string{
		"empty":       "",
		"not PEM":     "garbage",
		"bad DER":     "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	}
	for name, content := range pairCases {
		t.Run("key pair/"+name, func(t *testing.T) {
			b := NewFileBackend(nil)
			loc := filepath.Join(t.TempDir(), "p.key")
			writeFile(t, loc, []byte(content))
			if ok, err := b.KeyPairExists(ctx, loc); ok || !errors.Is(err, ErrMalformed) {
				t.Fatalf("KeyPairExists = %v, %v; want ErrMalformed", ok, err)
			}
			if _, err := b.PublicKey(ctx, loc); !errors.Is(err, ErrMalformed) {
				t.Fatalf("PublicKey = %v; want ErrMalformed", err)
			}
			if err := b.CreateKeyPair(ctx, loc, []Algorithm{ECP256}); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(loc)
			if _, err := parsePrivateKey(data); err != nil {
				t.Fatalf("file not rewritten with a valid key: %v", err)
			}
			assertMode(t, loc, 0o600)
		})
	}
	t.Run("symmetric/empty", func(t *testing.T) {
		b := NewFileBackend(nil)
		loc := filepath.Join(t.TempDir(), "k.key")
		writeFile(t, loc, nil)
		if ok, err := b.KeyExists(ctx, loc); ok || !errors.Is(err, ErrMalformed) {
			t.Fatalf("KeyExists = %v, %v; want ErrMalformed", ok, err)
		}
		if _, err := b.HMACSHA256(ctx, loc, nil); !errors.Is(err, ErrMalformed) {
			t.Fatalf("HMAC = %v; want ErrMalformed", err)
		}
		if err := b.CreateKey(ctx, loc, UsageSign); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(loc); len(data) != 32 {
			t.Fatalf("empty key file not replaced: %d bytes", len(data))
		}
	})
}

func TestFileKeyPairs(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		alg  Algorithm
		bits int // RSA modulus, 0 for EC
	}{{ECP256, 0}, {RSA2048, 2048}, {RSA4096, 4096}}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			if tt.alg == RSA4096 && testing.Short() {
				t.Skip("RSA-4096 generation is slow")
			}
			b := NewFileBackend(nil)
			loc := filepath.Join(t.TempDir(), "keys", "p.key")
			// Only the first algorithm counts for files.
			if err := b.CreateKeyPair(ctx, loc, []Algorithm{tt.alg, ECP256}); err != nil {
				t.Fatal(err)
			}
			assertMode(t, filepath.Dir(loc), 0o700)
			assertMode(t, loc, 0o600)
			data, _ := os.ReadFile(loc)
			block, _ := pem.Decode(data)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("not a PKCS#8 PEM file: %q", data)
			}
			priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := b.PublicKey(ctx, loc)
			if err != nil {
				t.Fatal(err)
			}
			switch k := priv.(type) {
			case *ecdsa.PrivateKey:
				if tt.bits != 0 || k.Curve != elliptic.P256() || !k.PublicKey.Equal(pub) {
					t.Fatalf("EC key %v", k.Curve.Params().Name)
				}
			case *rsa.PrivateKey:
				if k.N.BitLen() != tt.bits || k.E != 65537 || !k.PublicKey.Equal(pub) {
					t.Fatalf("RSA key of %d bits, e=%d", k.N.BitLen(), k.E)
				}
			}
			// Create-if-not-exists keeps the key.
			if err := b.CreateKeyPair(ctx, loc, []Algorithm{tt.alg}); err != nil {
				t.Fatal(err)
			}
			if again, _ := os.ReadFile(loc); !bytes.Equal(again, data) {
				t.Fatal("CreateKeyPair replaced an existing key pair")
			}
		})
	}
	b := NewFileBackend(nil)
	if err := b.CreateKeyPair(ctx, filepath.Join(t.TempDir(), "x"), nil); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("no algorithm: %v", err)
	}
	if err := b.CreateKeyPair(ctx, filepath.Join(t.TempDir(), "x"), []Algorithm{"ed25519"}); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("unknown algorithm: %v", err)
	}
}

// TestFileLoadsPreloadedFormats: what openssl's private_key_from_pem takes
// for aziot's preloaded keys: PKCS#8, traditional EC (also after an EC
// PARAMETERS block) and traditional RSA.
func TestFileLoadsPreloadedFormats(t *testing.T) {
	ctx := context.Background()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	p8, _ := x509.MarshalPKCS8PrivateKey(ec)
	rk := testRSAKey(t)
	tests := []struct {
		name string
		data []byte
		pub  interface{ Equal(x crypto.PublicKey) bool }
	}{
		{"PKCS#8", pemKey(t, "PRIVATE KEY", p8), &ec.PublicKey},
		{"EC PRIVATE KEY", pemKey(t, "EC PRIVATE KEY", ecDER), &ec.PublicKey},
		{"EC PARAMETERS first", append(pemKey(t, "EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}),
			pemKey(t, "EC PRIVATE KEY", ecDER)...), &ec.PublicKey},
		{"RSA PRIVATE KEY", pemKey(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), &rk.PublicKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewFileBackend(nil)
			loc := filepath.Join(t.TempDir(), "preloaded.pem")
			writeFile(t, loc, tt.data)
			pub, err := b.PublicKey(ctx, loc)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.pub.Equal(pub) {
				t.Fatal("loaded key is not the file's key")
			}
		})
	}
}

// TestFileCacheFollowsTheFile: the parsed-key cache never serves a key the
// file no longer holds, whether Warden or someone else changed it.
func TestFileCacheFollowsTheFile(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	b.recheck = 0 // every use stats the file
	loc := filepath.Join(t.TempDir(), "p.key")
	if err := b.CreateKeyPair(ctx, loc, []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	first, _ := b.PublicKey(ctx, loc)

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	replacement := filepath.Join(filepath.Dir(loc), "new")
	writeFile(t, replacement, pemKey(t, "PRIVATE KEY", der))
	if err := os.Rename(replacement, loc); err != nil { // behind the backend's back
		t.Fatal(err)
	}
	got, err := b.PublicKey(ctx, loc)
	if err != nil || !other.PublicKey.Equal(got) || other.PublicKey.Equal(first) {
		t.Fatalf("after external replacement: %v", err)
	}
	os.Remove(loc)
	if _, err := b.SignECDSA(ctx, loc, make([]byte, 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("sign after external removal: %v", err)
	}
}

// TestFileCacheRecheck: within the recheck interval a key replaced behind
// the backend's back is still the cached one; after it, the file's.
func TestFileCacheRecheck(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	b.recheck = 200 * time.Millisecond
	loc := filepath.Join(t.TempDir(), "p.key")
	if err := b.CreateKeyPair(ctx, loc, []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	first, _ := b.PublicKey(ctx, loc)
	replaced := time.Now()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	writeFile(t, loc+".new", pemKey(t, "PRIVATE KEY", der))
	if err := os.Rename(loc+".new", loc); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		got, err := b.PublicKey(ctx, loc)
		if err != nil {
			t.Fatal(err)
		}
		if other.PublicKey.Equal(got) {
			if d := time.Since(replaced); d > 2*time.Second {
				t.Errorf("replacement seen after %v", d)
			}
			break
		}
		if !first.(*ecdsa.PublicKey).Equal(got) {
			t.Fatal("neither the old key nor the new one")
		}
		if time.Now().After(deadline) {
			t.Fatal("replacement never seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFileMoveKeyPair(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	dir := t.TempDir()
	from, to := filepath.Join(dir, "from.key"), filepath.Join(dir, "to.key")
	if err := b.CreateKeyPair(ctx, from, []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateKeyPair(ctx, to, []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	want, _ := b.PublicKey(ctx, from)
	old, _ := b.PublicKey(ctx, to) // cached: the move must drop it
	if err := b.MoveKeyPair(ctx, from, to); err != nil {
		t.Fatal(err)
	}
	got, err := b.PublicKey(ctx, to)
	if err != nil || !want.(*ecdsa.PublicKey).Equal(got) || want.(*ecdsa.PublicKey).Equal(old) {
		t.Fatalf("destination after move: %v", err)
	}
	if ok, err := b.KeyPairExists(ctx, from); ok || err != nil {
		t.Fatalf("source after move: %v, %v", ok, err)
	}
	if err := b.MoveKeyPair(ctx, from, to); !errors.Is(err, ErrNotFound) {
		t.Fatalf("move of a missing key pair: %v", err)
	}
	if err := b.MoveKeyPair(ctx, to, to); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("move onto itself: %v", err)
	}
	if err := b.DeleteKeyPair(ctx, to); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublicKey(ctx, to); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestFileConcurrentCreateAgrees(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	dir := t.TempDir()
	pairLoc, keyLoc := filepath.Join(dir, "keys", "pair.key"), filepath.Join(dir, "keys", "sym.key")
	const n = 16
	pubs := make([]any, n)
	macs := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.CreateKeyPair(ctx, pairLoc, []Algorithm{ECP256}); err != nil {
				t.Error(err)
				return
			}
			pubs[i], _ = b.PublicKey(ctx, pairLoc)
			if err := b.CreateKey(ctx, keyLoc, UsageSign); err != nil {
				t.Error(err)
				return
			}
			macs[i], _ = b.HMACSHA256(ctx, keyLoc, []byte("m"))
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if !pubs[0].(*ecdsa.PublicKey).Equal(pubs[i]) || !bytes.Equal(macs[0], macs[i]) {
			t.Fatal("concurrent creators got different keys")
		}
	}
}

func TestFileECDSA(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	dir := t.TempDir()
	ecLoc, rsaLoc := filepath.Join(dir, "ec"), filepath.Join(dir, "rsa")
	b.CreateKeyPair(ctx, ecLoc, []Algorithm{ECP256})
	writeFile(t, rsaLoc, pemKey(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSAKey(t))))
	pub, _ := b.PublicKey(ctx, ecLoc)
	for _, digest := range [][]byte{sha256Sum("a"), make([]byte, 48), {1, 2, 3}} {
		sig, err := b.SignECDSA(ctx, ecLoc, digest)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
			t.Fatalf("signature over a %d-byte digest does not verify", len(digest))
		}
	}
	if _, err := b.SignECDSA(ctx, rsaLoc, sha256Sum("a")); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("ECDSA with an RSA key: %v", err)
	}
	if _, err := b.RSAPrivate(ctx, ecLoc, RSAPKCS1, []byte("x")); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("RSA with an EC key: %v", err)
	}
}

func sha256Sum(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// TestFileHonoursContext: creation with a cancelled context writes nothing.
func TestFileHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	b := NewFileBackend(nil)
	dir := t.TempDir()
	if err := b.CreateKey(ctx, filepath.Join(dir, "keys", "k"), UsageSign); err == nil {
		t.Error("CreateKey with a cancelled context succeeded")
	}
	if err := b.CreateKeyPair(ctx, filepath.Join(dir, "keys", "p"), []Algorithm{ECP256}); err == nil {
		t.Error("CreateKeyPair with a cancelled context succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "keys")); !os.IsNotExist(err) {
		t.Error("keys directory created without a key")
	}
}

// TestFileDeleteNotUndoneByConcurrentUse: a use of a key that read the file
// before a delete through the backend, and finishes after it, does not put
// the deleted key back into the cache: once DeleteKeyPair has returned, the
// key is gone for every caller.
func TestFileDeleteNotUndoneByConcurrentUse(t *testing.T) {
	ctx := context.Background()
	b := NewFileBackend(nil)
	b.recheck = time.Hour // only changes through the backend are noticed
	der, _ := x509.MarshalPKCS8PrivateKey(testRSAKey(t))
	data := pemKey(t, "PRIVATE KEY", der) // slow to parse: a wide window
	loc := filepath.Join(t.TempDir(), "p.key")
	for i := range 300 {
		writeFile(t, loc, data)
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); <-start; b.PublicKey(ctx, loc) }()
		go func() { defer wg.Done(); <-start; b.DeleteKeyPair(ctx, loc) }()
		close(start)
		wg.Wait()
		if _, err := b.PublicKey(ctx, loc); !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: the deleted key pair is still usable: %v", i, err)
		}
	}
}
