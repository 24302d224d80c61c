package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeP11 is an in-memory stand-in for the PKCS#11 backend: locations are
// opaque strings, and flags make it refuse what some tokens refuse.
type fakeP11 struct {
	mu         sync.Mutex
	keys       map[string][]byte
	pairs      map[string]string // loc → file of the key pair (kept by a FileBackend)
	files      *FileBackend
	dir        string
	noGenerate bool // CreateKey/ImportKey: ErrUnsupported (cryptoauthlib)
	noGCM      bool // EncryptAEAD: ErrUnsupported
	noPairs    bool // CreateKeyPair: ErrUnsupported
	loginErr   error
	logins     []string
	closed     bool
}

func newFakeP11(t *testing.T) *fakeP11 {
	return &fakeP11{keys: map[string][]byte{}, pairs: map[string]string{}, files: NewFileBackend(nil), dir: t.TempDir()}
}

func (f *fakeP11) opener(lib string, _ *slog.Logger) (PKCS11Backend, error) {
	if lib != "/lib/softhsm2.so" {
		return nil, fmt.Errorf("dlopen %s: no such file", lib)
	}
	return f, nil
}

func (f *fakeP11) Login(_ context.Context, uri string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins = append(f.logins, uri)
	return f.loginErr
}

func (f *fakeP11) key(loc string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.keys[loc]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: no object %s", ErrNotFound, loc)
}

func (f *fakeP11) CreateKey(ctx context.Context, loc string, usage Usage) error {
	if f.noGenerate {
		return fmt.Errorf("%w: C_GenerateKey: CKR_MECHANISM_INVALID", ErrUnsupported)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[loc]; !ok {
		f.keys[loc] = bytes.Repeat([]byte{0x11}, 32)
	}
	return nil
}

func (f *fakeP11) ImportKey(_ context.Context, loc string, key []byte, _ Usage) error {
	if f.noGenerate {
		return fmt.Errorf("%w: C_CreateObject failed", ErrUnsupported)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[loc] = bytes.Clone(key)
	return nil
}

func (f *fakeP11) KeyExists(_ context.Context, loc string) (bool, error) {
	_, err := f.key(loc)
	return err == nil, nil
}

func (f *fakeP11) DeleteKey(_ context.Context, loc string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keys, loc)
	return nil
}

func (f *fakeP11) HMACSHA256(_ context.Context, loc string, msg []byte) ([]byte, error) {
	k, err := f.key(loc)
	if err != nil {
		return nil, err
	}
	return DerivedHMACSHA256(k, msg), nil
}

func (f *fakeP11) EncryptAEAD(_ context.Context, loc string, iv, aad, pt []byte) ([]byte, error) {
	k, err := f.key(loc)
	if err != nil {
		return nil, err
	}
	if f.noGCM {
		return nil, fmt.Errorf("%w: CKM_AES_GCM", ErrUnsupported)
	}
	return sealGCM(k, iv, aad, pt)
}

func (f *fakeP11) DecryptAEAD(_ context.Context, loc string, iv, aad, ct []byte) ([]byte, error) {
	k, err := f.key(loc)
	if err != nil {
		return nil, err
	}
	return openGCM(k, iv, aad, ct)
}

// pair maps a token location to a file of the fake token.
func (f *fakeP11) pair(loc string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pairs[loc]; ok {
		return p, nil
	}
	return "", fmt.Errorf("%w: no key pair %s", ErrNotFound, loc)
}

func (f *fakeP11) CreateKeyPair(ctx context.Context, loc string, algs []Algorithm) error {
	if f.noPairs {
		return fmt.Errorf("%w: no mechanism", ErrUnsupported)
	}
	f.mu.Lock()
	p, ok := f.pairs[loc]
	if !ok {
		p = filepath.Join(f.dir, KeyFileName(loc))
		f.pairs[loc] = p
	}
	f.mu.Unlock()
	return f.files.CreateKeyPair(ctx, p, algs)
}

func (f *fakeP11) KeyPairExists(_ context.Context, loc string) (bool, error) {
	_, err := f.pair(loc)
	return err == nil, nil
}

func (f *fakeP11) DeleteKeyPair(_ context.Context, loc string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pairs, loc)
	return nil
}

func (f *fakeP11) MoveKeyPair(_ context.Context, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pairs[from]
	if !ok {
		return ErrNotFound
	}
	delete(f.pairs, from)
	f.pairs[to] = p
	return nil
}

func (f *fakeP11) PublicKey(ctx context.Context, loc string) (crypto.PublicKey, error) {
	p, err := f.pair(loc)
	if err != nil {
		return nil, err
	}
	return f.files.PublicKey(ctx, p)
}

func (f *fakeP11) SignECDSA(ctx context.Context, loc string, digest []byte) ([]byte, error) {
	p, err := f.pair(loc)
	if err != nil {
		return nil, err
	}
	return f.files.SignECDSA(ctx, p, digest)
}

func (f *fakeP11) RSAPrivate(ctx context.Context, loc string, pad RSAPadding, data []byte) ([]byte, error) {
	p, err := f.pair(loc)
	if err != nil {
		return nil, err
	}
	return f.files.RSAPrivate(ctx, p, pad, data)
}

func (f *fakeP11) Close() error {
	f.closed = true
	return nil
}

const (
	testLib  = "/lib/softhsm2.so"
	testSlot = "pkcs11:token=Warden?pin-value=1234"
)

func openFileKeys(t *testing.T) *Keys {
	t.Helper()
	k, err := Open(context.Background(), Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openTokenKeys is a store with the fake token as base slot and a home dir.
func openTokenKeys(t *testing.T, f *fakeP11) (*Keys, string) {
	t.Helper()
	home := t.TempDir()
	k, err := Open(context.Background(), Config{HomeDir: home, PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot, OpenPKCS11: f.opener})
	if err != nil {
		t.Fatal(err)
	}
	return k, home
}

func TestLocations(t *testing.T) {
	home := "/var/lib/aziot/keyd"
	file := func(id string) string { return filepath.Join(home, "keys", KeyFileName(id)) }
	tests := []struct {
		name    string
		cfg     Config
		id      string
		want    []string
		wantErr string
	}{
		{"home only", Config{HomeDir: home}, "device-id", []string{file("device-id")}, ""},
		{"base slot first", Config{HomeDir: home, PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot}, "device-id",
			[]string{"pkcs11:token=Warden;object=device%2Did?pin-value=1234", file("device-id")}, ""},
		{"base slot only", Config{PKCS11LibPath: testLib, PKCS11BaseSlot: "pkcs11:slot-id=0;object=old"}, "a_b",
			[]string{"pkcs11:slot-id=0;object=a%5Fb"}, ""},
		{"library without base slot", Config{HomeDir: home, PKCS11LibPath: testLib}, "k", []string{file("k")}, ""},
		{"base slot without library", Config{HomeDir: home, PKCS11BaseSlot: testSlot}, "k", []string{file("k")}, ""},
		{"preloaded file", Config{HomeDir: home, Preloaded: map[string]string{"device-id": "file:///var/secrets/aziot/keyd/device-id"}},
			"device-id", []string{"/var/secrets/aziot/keyd/device-id"}, ""},
		{"preloaded file, localhost and escapes", Config{Preloaded: map[string]string{"k": "file://localhost/srv/my%20keys/k.pem"}},
			"k", []string{"/srv/my keys/k.pem"}, ""},
		{"preloaded pkcs11", Config{HomeDir: home, PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot,
			Preloaded: map[string]string{"est-id": "pkcs11:slot-id=0;object=est%2Did?pin-value=1"}},
			"est-id", []string{"pkcs11:slot-id=0;object=est%2Did?pin-value=1"}, ""},
		{"preloaded pkcs11 without library", Config{HomeDir: home, Preloaded: map[string]string{"k": "pkcs11:slot-id=0;object=k"}},
			"k", nil, "pre-loaded key requires PKCS#11 lib path to be configured"},
		{"nowhere", Config{}, "k", nil, "no way to create keys"},
		{"empty ID", Config{HomeDir: home}, "", nil, "key ID is empty"},
		// 186 letters give aziot's 255-byte file name; one more has no file.
		{"longest file name", Config{HomeDir: home}, strings.Repeat("k", 186), []string{file(strings.Repeat("k", 186))}, ""},
		{"ID too long for a file", Config{HomeDir: home}, strings.Repeat("k", 187), nil, "too long for a key file name"},
		{"ID too long for a file, in PKCS#11", Config{HomeDir: home, PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot}, strings.Repeat("k", 187),
			[]string{"pkcs11:token=Warden;object=" + strings.Repeat("k", 187) + "?pin-value=1234"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeP11(t)
			tt.cfg.OpenPKCS11 = f.opener
			k, err := Open(context.Background(), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			locs, err := k.locations(tt.id)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidParameter) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalidParameter %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range locs {
				got = append(got, l.loc)
				if _, isFile := l.b.(*FileBackend); isFile != l.file {
					t.Errorf("%s: file flag %v on a %T", l.loc, l.file, l.b)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("locations = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	if _, _ = openTokenKeys(t, f); len(f.logins) != 1 || f.logins[0] != testSlot {
		t.Fatalf("Open logged in to %q, want the base slot", f.logins)
	}
	f = newFakeP11(t)
	f.loginErr = errors.New("CKR_PIN_INCORRECT")
	_, err := Open(ctx, Config{PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot, OpenPKCS11: f.opener})
	if err == nil || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") || !f.closed {
		t.Fatalf("Open with a wrong PIN: %v (backend closed: %v)", err, f.closed)
	}
	if _, err := Open(ctx, Config{PKCS11LibPath: "/nope.so", PKCS11BaseSlot: testSlot, OpenPKCS11: f.opener}); err == nil {
		t.Fatal("Open with a missing library succeeded")
	}
	if _, err := Open(ctx, Config{PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot}); err == nil {
		t.Fatal("Open with a base slot but no PKCS#11 support succeeded")
	}
	// Library without base slot: opened on first use of a preloaded key.
	f = newFakeP11(t)
	k, err := Open(ctx, Config{PKCS11LibPath: testLib, OpenPKCS11: f.opener, Preloaded: map[string]string{"p": "pkcs11:token=x;object=p"}})
	if err != nil || len(f.logins) != 0 {
		t.Fatalf("Open: %v, logins %q", err, f.logins)
	}
	if err := k.LoadKey(ctx, "p"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadKey of an absent preloaded token key: %v", err)
	}
	k.Close()
	if !f.closed {
		t.Fatal("Close did not close the PKCS#11 backend")
	}
	for _, bad := range []string{"http://x/k", "file:relative", "file://host/k", "no-scheme"} {
		if _, err := Open(ctx, Config{Preloaded: map[string]string{"k": bad}}); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("preloaded %q: %v, want ErrInvalidParameter", bad, err)
		}
	}
}

// TestCreateKeyFallback: aziot's fallbacks for symmetric keys when a token
// cannot generate or store the key, or cannot do AES-GCM with it.
func TestCreateKeyFallback(t *testing.T) {
	ctx := context.Background()
	tokenLoc := withObject(testSlot, "k")
	tests := []struct {
		name        string
		noGenerate  bool
		noGCM       bool
		usage       Usage
		import_     bool
		wantInToken bool
	}{
		{"token generates", false, false, UsageSign, false, true},
		{"token imports", false, false, UsageEncrypt, true, true},
		{"no generate: file", true, false, UsageSign, false, false},
		{"no import: file", true, false, UsageSign, true, false},
		{"no GCM, encrypt key: file", false, true, UsageEncrypt, false, false},
		{"no GCM, imported encrypt key: file", false, true, UsageEncrypt, true, false},
		{"no GCM, sign key: token", false, true, UsageSign, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeP11(t)
			f.noGenerate, f.noGCM = tt.noGenerate, tt.noGCM
			k, home := openTokenKeys(t, f)
			var err error
			if tt.import_ {
				err = k.ImportKey(ctx, "k", bytes.Repeat([]byte{0x22}, 32), tt.usage)
			} else {
				err = k.CreateKey(ctx, "k", tt.usage)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, inToken := f.keys[tokenLoc]
			_, statErr := os.Stat(filepath.Join(home, "keys", KeyFileName("k")))
			if inToken != tt.wantInToken || (statErr == nil) == tt.wantInToken {
				t.Fatalf("in token: %v, in file: %v; want in token: %v", inToken, statErr == nil, tt.wantInToken)
			}
			if err := k.LoadKey(ctx, "k"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLoadOrder: the first location where the key exists wins.
func TestLoadOrder(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	k, home := openTokenKeys(t, f)
	fileKey, tokenKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	writeFile(t, filepath.Join(home, "keys", KeyFileName("k")), fileKey)

	// Only in the file (created before the base slot was configured).
	if err := k.LoadKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := k.CreateKey(ctx, "k", UsageSign); err != nil || len(f.keys) != 0 {
		t.Fatalf("CreateKey of a key in the file created one in the token: %v", err)
	}
	mac, _ := k.HMACSHA256(ctx, "k", []byte("m"))
	if !bytes.Equal(mac, DerivedHMACSHA256(fileKey, []byte("m"))) {
		t.Fatal("HMAC did not use the file key")
	}
	// In both: the token wins.
	f.keys[withObject(testSlot, "k")] = tokenKey
	mac, _ = k.HMACSHA256(ctx, "k", []byte("m"))
	if !bytes.Equal(mac, DerivedHMACSHA256(tokenKey, []byte("m"))) {
		t.Fatal("HMAC did not use the token key")
	}
	// Delete removes it everywhere.
	if err := k.DeleteKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := k.LoadKey(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadKey after delete: %v", err)
	}
	// v1 framing is for file keys only.
	k.ImportKey(ctx, "t", tokenKey, UsageEncrypt)
	ct, _ := k.Encrypt(ctx, "t", []byte("123456789012"), nil, []byte("x"))
	v1 := append(append([]byte{1}, ct[len(ct)-16:]...), ct[1:len(ct)-16]...)
	if _, err := k.Decrypt(ctx, "t", []byte("123456789012"), nil, v1); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("v1 ciphertext with a token key: %v", err)
	}
}

func TestCreateKeyPairFirstLocationOnly(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	k, home := openTokenKeys(t, f)
	if err := k.CreateKeyPair(ctx, "p", []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.pairs[withObject(testSlot, "p")]; !ok {
		t.Fatal("key pair not created in the token")
	}
	f.noPairs = true
	err := k.CreateKeyPair(ctx, "q", []Algorithm{ECP256, RSA2048})
	if !errors.Is(err, ErrInvalidParameter) || !strings.Contains(err.Error(), "no algorithm succeeded") {
		t.Fatalf("token without key-pair mechanisms: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "keys", KeyFileName("q"))); !os.IsNotExist(err) {
		t.Fatal("key pair fell back to the file")
	}
	for _, algs := range [][]Algorithm{nil, {"ed25519"}} {
		if err := k.CreateKeyPair(ctx, "r", algs); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("algorithms %q: %v", algs, err)
		}
	}
}

// TestKeysRestart: a new store over the same home directory has the same
// keys (aziot's files are the state).
func TestKeysRestart(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	k1, _ := Open(ctx, Config{HomeDir: home})
	if err := k1.CreateKey(ctx, "sym", UsageSign); err != nil {
		t.Fatal(err)
	}
	if err := k1.CreateKeyPair(ctx, "pair", []Algorithm{ECP256}); err != nil {
		t.Fatal(err)
	}
	mac1, _ := k1.HMACSHA256(ctx, "sym", []byte("m"))
	pub1, _ := k1.PublicKey(ctx, "pair")
	k1.Close()

	k2, _ := Open(ctx, Config{HomeDir: home})
	k2.CreateKey(ctx, "sym", UsageSign)
	k2.CreateKeyPair(ctx, "pair", []Algorithm{RSA2048})
	mac2, _ := k2.HMACSHA256(ctx, "sym", []byte("m"))
	pub2, err := k2.PublicKey(ctx, "pair")
	if err != nil || !bytes.Equal(mac1, mac2) || !pub1.(*ecdsa.PublicKey).Equal(pub2) {
		t.Fatalf("keys changed across a restart: %v", err)
	}
	for _, op := range []struct {
		name string
		err  error
	}{
		{"LoadKey", k2.LoadKey(ctx, "absent")},
		{"LoadKeyPair", k2.LoadKeyPair(ctx, "absent")},
		{"HMAC", func() error { _, err := k2.HMACSHA256(ctx, "absent", nil); return err }()},
		{"Signer", func() error { _, err := k2.Signer(ctx, "absent"); return err }()},
	} {
		if !errors.Is(op.err, ErrNotFound) {
			t.Errorf("%s of an absent key: %v, want ErrNotFound", op.name, op.err)
		}
	}
	// An empty key file: an error on load (not "not found"), replaced on create.
	empty := filepath.Join(home, "keys", KeyFileName("empty"))
	writeFile(t, empty, nil)
	if err := k2.LoadKey(ctx, "empty"); err == nil || errors.Is(err, ErrNotFound) || !errors.Is(err, ErrMalformed) {
		t.Fatalf("LoadKey of an empty file: %v", err)
	}
	if err := k2.CreateKey(ctx, "empty", UsageSign); err != nil {
		t.Fatal(err)
	}
	if err := k2.LoadKey(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
}

func TestKeysPreloadedFile(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "my secrets")
	path := filepath.Join(dir, "device-id")
	writeFile(t, path, []byte("sas key bytes"))
	k, err := Open(ctx, Config{HomeDir: t.TempDir(), Preloaded: map[string]string{
		"device-id": "file://" + strings.ReplaceAll(path, " ", "%20"),
		"new":       "file://" + filepath.Join(dir, "new.key"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	mac, err := k.HMACSHA256(ctx, "device-id", []byte("m"))
	if err != nil || !bytes.Equal(mac, DerivedHMACSHA256([]byte("sas key bytes"), []byte("m"))) {
		t.Fatalf("HMAC with the preloaded key: %v", err)
	}
	if err := k.CreateKey(ctx, "new", UsageSign); err != nil {
		t.Fatal(err)
	}
	assertMode(t, filepath.Join(dir, "new.key"), 0o600)
}

func TestDeriveKey(t *testing.T) {
	ctx := context.Background()
	k := openFileKeys(t)
	base := []byte("aziot_identityd_master_id bytes")
	k.ImportKey(ctx, "master", base, UsageDerive)
	data := []byte("module1:gen:primary")
	got, err := k.DeriveKey(ctx, "master", data)
	if err != nil || len(got) != 32 || !bytes.Equal(got, DerivedHMACSHA256(base, data)) {
		t.Fatalf("DeriveKey = %x, %v", got, err)
	}
	if _, err := k.DeriveKey(ctx, "absent", data); !errors.Is(err, ErrNotFound) {
		t.Fatalf("derive from an absent key: %v", err)
	}
}

func TestKeysMoveKeyPair(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	k, home := openTokenKeys(t, f)
	k.CreateKeyPair(ctx, "old", []Algorithm{ECP256})
	want, _ := k.PublicKey(ctx, "old")
	if err := k.MoveKeyPair(ctx, "old", "new"); err != nil {
		t.Fatal(err)
	}
	if got, err := k.PublicKey(ctx, "new"); err != nil || !want.(*ecdsa.PublicKey).Equal(got) {
		t.Fatalf("moved key pair: %v", err)
	}
	if err := k.LoadKeyPair(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("source after move: %v", err)
	}
	if err := k.MoveKeyPair(ctx, "new", "new"); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("move onto itself: %v", err)
	}
	if err := k.MoveKeyPair(ctx, "absent", "new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("move of an absent key pair: %v", err)
	}
	// A key pair in the file (made before the base slot) moves within the files.
	fk := NewFileBackend(nil)
	fk.CreateKeyPair(ctx, filepath.Join(home, "keys", KeyFileName("filed")), []Algorithm{ECP256})
	if err := k.MoveKeyPair(ctx, "filed", "renamed"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, "keys", KeyFileName("renamed"))); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteKeyPair(ctx, "renamed"); err != nil {
		t.Fatal(err)
	}
	if err := k.LoadKeyPair(ctx, "renamed"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestKeysConcurrentCreate(t *testing.T) {
	ctx := context.Background()
	k := openFileKeys(t)
	const n = 16
	macs := make([][]byte, n)
	pubs := make([]crypto.PublicKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := k.CreateKey(ctx, "k", UsageSign); err != nil {
				t.Error(err)
			}
			if err := k.CreateKeyPair(ctx, "p", []Algorithm{ECP256}); err != nil {
				t.Error(err)
			}
			macs[i], _ = k.HMACSHA256(ctx, "k", []byte("m"))
			pubs[i], _ = k.PublicKey(ctx, "p")
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if !bytes.Equal(macs[0], macs[i]) || !pubs[0].(*ecdsa.PublicKey).Equal(pubs[i]) {
			t.Fatal("concurrent creators got different keys")
		}
	}
}

func TestWithObject(t *testing.T) {
	tests := []struct{ base, label, want string }{
		{"pkcs11:token=Key%20pairs?pin-value=1234", "local-ca", "pkcs11:token=Key%20pairs;object=local%2Dca?pin-value=1234"},
		{"pkcs11:slot-id=0;object=x;id=%01", "est-bootstrap-id", "pkcs11:slot-id=0;id=%01;object=est%2Dbootstrap%2Did"},
		{"pkcs11:slot-id=1;", "a b/é", "pkcs11:slot-id=1;object=a%20b%2F%C3%A9"},
	}
	for _, tt := range tests {
		if got := withObject(tt.base, tt.label); got != tt.want {
			t.Errorf("withObject(%q, %q) = %q, want %q", tt.base, tt.label, got, tt.want)
		}
	}
}

// TestPathCacheHoldsNoCallerData: the key-path cache keeps at most
// maxCachedPaths short IDs of its own. It kept the first 4096 IDs it saw
// for good, as they came: a caller's IDs of up to 1 MiB (which may still
// name a file: only their letters and digits enter its name), or short
// IDs that were substrings of a 1 MiB request line.
func TestPathCacheHoldsNoCallerData(t *testing.T) {
	ctx := context.Background()
	k, err := Open(ctx, Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("-", 64<<10)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 64
	before := heap()
	for i := range n {
		long := fmt.Sprintf("k%d", i) + pad
		short := fmt.Sprintf("s%d", i)
		short = (short + pad)[:len(short)] // as a path segment of a request line
		for _, id := range []string{long, short} {
			if err := k.LoadKey(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("LoadKey: %v, want ErrNotFound", err)
			}
		}
	}
	if grown := int64(heap()) - int64(before); grown > int64(n*len(pad)/4) {
		t.Fatalf("the path cache holds %d KiB after %d IDs of %d KiB", grown>>10, 2*n, len(pad)>>10)
	}
	runtime.KeepAlive(k)
}

// TestDecryptV1FileKeyBehindBaseSlot: a file key made before a base slot was
// configured (IoT Edge 1.1's iotedge_master_encryption_id) still decrypts
// its v1 ciphertexts: the token, where the key is not, does not answer for it.
func TestDecryptV1FileKeyBehindBaseSlot(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	k, home := openTokenKeys(t, f)
	writeFile(t, filepath.Join(home, "keys", KeyFileName("k")), make([]byte, 32))
	iv := make([]byte, 12)
	ct, err := k.Encrypt(ctx, "k", iv, nil, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	v1 := append(append([]byte{1}, ct[len(ct)-16:]...), ct[1:len(ct)-16]...)
	if got, err := k.Decrypt(ctx, "k", iv, nil, v1); err != nil || string(got) != "secret" {
		t.Fatalf("v1 ciphertext with a file key behind a base slot: %q, %v", got, err)
	}
}

// TestImportFallbackReplacesTokenKey: an import the token refuses goes to
// the file, and the older key the token holds under that ID is deleted, as
// it would otherwise be found first and used instead.
func TestImportFallbackReplacesTokenKey(t *testing.T) {
	ctx := context.Background()
	f := newFakeP11(t)
	k, _ := openTokenKeys(t, f)
	f.keys[withObject(testSlot, "k")] = bytes.Repeat([]byte{1}, 32)
	f.noGenerate = true
	key := bytes.Repeat([]byte{2}, 32)
	if err := k.ImportKey(ctx, "k", key, UsageSign); err != nil {
		t.Fatal(err)
	}
	if mac, err := k.HMACSHA256(ctx, "k", []byte("m")); err != nil || !bytes.Equal(mac, DerivedHMACSHA256(key, []byte("m"))) {
		t.Fatalf("HMAC after the import used the old token key: %v", err)
	}
}
