package capabilities

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// opaqueSigner hides the *ecdsa.PrivateKey the way a key store does, so the
// tests prove that signing goes through crypto.Signer only.
type opaqueSigner struct{ k *ecdsa.PrivateKey }

func (s opaqueSigner) Public() crypto.PublicKey { return s.k.Public() }
func (s opaqueSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is an Authority with its key, clock and revocation file.
type fixture struct {
	a     *Authority
	key   *ecdsa.PrivateKey
	clock *clock
	opts  Options
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	f := &fixture{key: newKey(t), clock: newClock()}
	if opts.RevocationPath == "" {
		opts.RevocationPath = filepath.Join(t.TempDir(), "revoked.json")
	}
	opts.Now = f.clock.Now
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f.opts = opts
	f.a = f.restart(t)
	return f
}

// restart builds a new Authority on the same key, clock and revocation file.
func (f *fixture) restart(t testing.TB) *Authority {
	t.Helper()
	a, err := NewAuthority(opaqueSigner{f.key}, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var signCap = []Capability{{Resource: "key:device-id", Ops: []string{"sign"}}}

func (f *fixture) mint(t testing.TB, uid uint32, caps []Capability, ttl time.Duration) (string, *Claims) {
	t.Helper()
	tok, c, err := f.a.Mint(context.Background(), "agent", uid, caps, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

func b64(v []byte) string { return base64.RawURLEncoding.EncodeToString(v) }

func b64json(t testing.TB, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(data)
}

// es256 signs a hand-made JWS signing input with key.
func es256(t testing.TB, key *ecdsa.PrivateKey, input string) string {
	t.Helper()
	d := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return b64(sig)
}

// craft builds a compact JWS from header and claims, signed by key with ES256.
func craft(t testing.TB, key *ecdsa.PrivateKey, header, claims any) string {
	t.Helper()
	input := b64json(t, header) + "." + b64json(t, claims)
	return input + "." + es256(t, key, input)
}

// validClaims is a claims set the fixture's Authority accepts at its clock.
func (f *fixture) validClaims(uid uint32) map[string]any {
	now := f.clock.Now().Unix()
	return map[string]any{
		"iss": "warden", "aud": "warden", "sub": "agent",
		"iat": now, "nbf": now, "exp": now + 600, "jti": "AAAAAAAAAAAAAAAAAAAAAA",
		"cnf": map[string]any{"uid": uid},
		"cap": []map[string]any{{"res": "key:device-id", "ops": []string{"sign"}}},
	}
}

func (f *fixture) header() map[string]any {
	return map[string]any{"alg": "ES256", "typ": TokenType, "kid": f.a.kid}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("error %v, want none", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}
