package capabilities

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

var ctx = context.Background()

func TestMintVerify(t *testing.T) {
	tests := []struct {
		name   string
		uid    uint32
		clock  time.Duration // moved after minting
		revoke bool
		want   error
	}{
		{name: "ok", uid: 1000},
		{name: "wrong uid", uid: 1001, want: ErrWrongUID},
		{name: "just before expiry", uid: 1000, clock: 10*time.Minute - time.Second},
		{name: "at expiry", uid: 1000, clock: 10 * time.Minute, want: ErrExpired},
		{name: "expired", uid: 1000, clock: time.Hour, want: ErrExpired},
		{name: "clock stepped back within leeway", uid: 1000, clock: -nbfLeeway},
		{name: "not yet valid", uid: 1000, clock: -time.Minute, want: ErrNotYetValid},
		{name: "revoked", uid: 1000, revoke: true, want: ErrRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			tok, minted := f.mint(t, 1000, signCap, 10*time.Minute)
			if tt.revoke {
				if err := f.a.Revoke(ctx, minted.ID, minted.Expiry); err != nil {
					t.Fatal(err)
				}
			}
			f.clock.Add(tt.clock)
			c, err := f.a.Verify(ctx, tok, tt.uid)
			wantErr(t, err, tt.want)
			if err != nil {
				if strings.Contains(err.Error(), tok) {
					t.Fatal("error message contains the token")
				}
				return
			}
			if c.ID != minted.ID || c.Subject != "agent" || c.UID != 1000 || c.Parent != "" ||
				!c.Expiry.Equal(minted.Expiry) || !c.Covers("key:device-id", "sign") {
				t.Fatalf("claims %+v, minted %+v", c, minted)
			}
		})
	}
}

func TestMintClaims(t *testing.T) {
	f := newFixture(t, Options{DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour})
	now := f.clock.Now()
	tok, c, err := f.a.Mint(ctx, "", 42, signCap, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "uid:42" || !c.Expiry.Equal(now.Add(5*time.Minute)) || !c.IssuedAt.Equal(now) || !c.NotBefore.Equal(now) {
		t.Fatalf("claims %+v", c)
	}
	if raw, _ := base64.RawURLEncoding.DecodeString(c.ID); len(raw) != 16 {
		t.Fatalf("jti %q is not 128 bits base64url", c.ID)
	}
	parts := strings.Split(tok, ".")
	var hdr map[string]any
	var claims map[string]any
	decodeSegment(t, parts[0], &hdr)
	decodeSegment(t, parts[1], &claims)
	if hdr["alg"] != "ES256" || hdr["typ"] != TokenType || hdr["kid"] != f.a.kid {
		t.Fatalf("header %v", hdr)
	}
	want := map[string]any{
		"iss": "warden", "aud": "warden", "sub": "uid:42", "jti": c.ID,
		"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Unix() + 300),
		"cnf": map[string]any{"uid": float64(42)},
		"cap": []any{map[string]any{"res": "key:device-id", "ops": []any{"sign"}}},
	}
	if got, _ := json.Marshal(claims); string(got) != mustJSON(t, want) {
		t.Fatalf("claims\n%s\nwant\n%s", got, mustJSON(t, want))
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	data, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestMintRejects(t *testing.T) {
	f := newFixture(t, Options{MaxTTL: time.Hour})
	tests := []struct {
		name string
		caps []Capability
		ttl  time.Duration
		want error
	}{
		{"no capabilities", nil, 0, ErrInvalidRequest},
		{"no ops", []Capability{{Resource: "key:a"}}, 0, ErrInvalidRequest},
		{"empty op", []Capability{{Resource: "key:a", Ops: []string{""}}}, 0, ErrInvalidRequest},
		{"bad op", []Capability{{Resource: "key:a", Ops: []string{"Sign!"}}}, 0, ErrInvalidRequest},
		{"bad resource", []Capability{{Resource: "file:/etc/shadow", Ops: []string{"get"}}}, 0, ErrInvalidRequest},
		{"bare wildcard", []Capability{{Resource: "*", Ops: []string{"sign"}}}, 0, ErrInvalidRequest},
		{"ttl over max", signCap, time.Hour + time.Second, ErrTTL},
		{"negative ttl", signCap, -time.Minute, ErrTTL},
		{"sub-second ttl", signCap, 500 * time.Millisecond, ErrTTL},
		{"ttl at max", signCap, time.Hour, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.a.Mint(ctx, "agent", 1, tt.caps, tt.ttl)
			wantErr(t, err, tt.want)
		})
	}
}

func TestNewAuthorityRejects(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec := opaqueSigner{newKey(t)}
	corrupt := filepath.Join(t.TempDir(), "revoked.json")
	os.WriteFile(corrupt, []byte(`{"revoked": `), 0o600)
	tests := []struct {
		name   string
		signer crypto.Signer
		opts   Options
	}{
		{"nil signer", nil, Options{}},
		{"RSA key", rsaKey, Options{}},
		{"default over max", ec, Options{DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour}},
		{"negative ttl", ec, Options{DefaultTTL: -time.Hour}},
		{"corrupt revocation list", ec, Options{RevocationPath: corrupt}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewAuthority(tt.signer, tt.opts); err == nil {
				t.Fatal("NewAuthority succeeded")
			}
		})
	}
}

// TestForgedTokens feeds tokens that must never verify.
func TestForgedTokens(t *testing.T) {
	f := newFixture(t, Options{})
	good, _ := f.mint(t, 1000, signCap, 10*time.Minute)
	parts := strings.Split(good, ".")
	hdr := f.header()

	tampered := func() string {
		var claims map[string]any
		decodeSegment(t, parts[1], &claims)
		claims["cnf"] = map[string]any{"uid": 0}
		return parts[0] + "." + b64json(t, claims) + "." + parts[2]
	}
	widened := func() string {
		var claims map[string]any
		decodeSegment(t, parts[1], &claims)
		claims["cap"] = []map[string]any{{"res": "key:*", "ops": []string{"sign", "export"}}}
		return parts[0] + "." + b64json(t, claims) + "." + parts[2]
	}
	algNone := func() string {
		return b64json(t, map[string]any{"alg": "none", "typ": TokenType}) + "." + b64json(t, f.validClaims(1000)) + "."
	}
	// HS256 keyed with each form of the public key a confused verifier
	// might use as the secret.
	hs256 := func(secret []byte) string {
		input := b64json(t, map[string]any{"alg": "HS256", "typ": TokenType, "kid": f.a.kid}) + "." + b64json(t, f.validClaims(1000))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return input + "." + b64(m.Sum(nil))
	}
	der, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	point, _ := f.key.PublicKey.Bytes()
	withClaim := func(k string, v any) string {
		c := f.validClaims(1000)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return craft(t, f.key, hdr, c)
	}
	withHeader := func(k string, v any) string {
		h := f.header()
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
		return craft(t, f.key, h, f.validClaims(1000))
	}

	tests := []struct{ name, token string }{
		{"empty", ""},
		{"garbage", "not a token"},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", good + ".x"},
		{"tampered uid", tampered()},
		{"tampered scope", widened()},
		{"signature cut", parts[0] + "." + parts[1] + "." + parts[2][:20]},
		{"alg none", algNone()},
		{"alg none with signature", b64json(t, map[string]any{"alg": "none", "typ": TokenType}) + "." + parts[1] + "." + parts[2]},
		{"HS256 with PEM public key", hs256(pemKey)},
		{"HS256 with DER public key", hs256(der)},
		{"HS256 with EC point", hs256(point)},
		{"HS256 with JWKS", hs256(f.a.jwks)},
		{"ES384 header", withHeader("alg", "ES384")},
		{"other key", craft(t, newKey(t), hdr, f.validClaims(1000))},
		{"typ missing", withHeader("typ", nil)},
		{"typ JWT", withHeader("typ", "JWT")},
		{"crit header", withHeader("crit", []string{"exp"})},
		{"iss other", withClaim("iss", "someone")},
		{"aud other", withClaim("aud", "other")},
		{"aud array", withClaim("aud", []string{"warden"})},
		{"sub missing", withClaim("sub", nil)},
		{"jti missing", withClaim("jti", nil)},
		{"exp missing", withClaim("exp", nil)},
		{"cnf missing", withClaim("cnf", nil)},
		{"cnf.uid missing", withClaim("cnf", map[string]any{})},
		{"cnf.uid negative", withClaim("cnf", map[string]any{"uid": -1})},
		{"cap missing", withClaim("cap", nil)},
		{"cap bad resource", withClaim("cap", []map[string]any{{"res": "disk:/", "ops": []string{"sign"}}})},
		{"par without anc", withClaim("par", "x")},
		{"anc without par", withClaim("anc", []string{"x"})},
		{"claims not JSON", func() string {
			input := b64json(t, hdr) + "." + b64([]byte("{not json"))
			return input + "." + es256(t, f.key, input)
		}()},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`},
		{"too long", good + strings.Repeat("A", maxTokenLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.a.Verify(ctx, tt.token, 1000)
			wantErr(t, err, ErrInvalid)
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatal("error message contains the token")
			}
			if _, err := f.a.Inspect(ctx, tt.token); err == nil {
				t.Fatal("Inspect accepted the token")
			}
		})
	}
	// Control: the fixture's hand-made tokens do verify when nothing is wrong.
	if _, err := f.a.Verify(ctx, craft(t, f.key, hdr, f.validClaims(1000)), 1000); err != nil {
		t.Fatalf("hand-made control token: %v", err)
	}
}

func TestInspectIgnoresTimeRevocationAndUID(t *testing.T) {
	f := newFixture(t, Options{})
	tok, minted := f.mint(t, 1000, signCap, time.Minute)
	f.a.Revoke(ctx, minted.ID, minted.Expiry)
	f.clock.Add(time.Hour)
	c, err := f.a.Inspect(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != minted.ID {
		t.Fatalf("Inspect id %q, want %q", c.ID, minted.ID)
	}
	wantErr(t, f.a.Active(c), ErrExpired)
}

func TestRevocationPersists(t *testing.T) {
	f := newFixture(t, Options{})
	tok, c := f.mint(t, 1000, signCap, 10*time.Minute)
	other, _ := f.mint(t, 1000, signCap, 10*time.Minute)
	if err := f.a.Revoke(ctx, c.ID, c.Expiry); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.opts.RevocationPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("revocation list mode %o, want 600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(f.opts.RevocationPath)
	var file struct{ Revoked map[string]int64 }
	if err := json.Unmarshal(data, &file); err != nil || file.Revoked[c.ID] != c.Expiry.Unix() {
		t.Fatalf("revocation list %s: %v", data, err)
	}

	a2 := f.restart(t)
	_, err = a2.Verify(ctx, tok, 1000)
	wantErr(t, err, ErrRevoked)
	if _, err := a2.Verify(ctx, other, 1000); err != nil {
		t.Fatalf("unrevoked token after restart: %v", err)
	}

	// Entries are pruned once their token has long expired.
	f.clock.Add(time.Hour)
	if err := a2.Revoke(ctx, "another", time.Time{}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(f.opts.RevocationPath)
	if strings.Contains(string(data), c.ID) || !strings.Contains(string(data), "another") {
		t.Fatalf("revocation list not pruned: %s", data)
	}
	wantErr(t, a2.Revoke(ctx, "", time.Time{}), ErrInvalidRequest)
}

// TestRevokeByIDAfterMaxTTLLowered: a revocation by id is kept for the
// maximum TTL from now, which must outlive every token that still verifies,
// also one minted before a restart that lowered max_ttl.
func TestRevokeByIDAfterMaxTTLLowered(t *testing.T) {
	f := newFixture(t, Options{MaxTTL: 24 * time.Hour})
	tok, c := f.mint(t, 1000, signCap, 24*time.Hour)
	f.opts.MaxTTL = time.Hour
	a := f.restart(t)
	if err := a.Revoke(ctx, c.ID, time.Time{}); err != nil { // by id: exp unknown
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	if err := a.Revoke(ctx, "another", time.Time{}); err != nil { // prunes
		t.Fatal(err)
	}
	for _, a := range []*Authority{a, f.restart(t)} {
		if _, err := a.Verify(ctx, tok, 1000); err == nil {
			t.Fatal("a token revoked by id verifies again once its revocation was pruned")
		}
	}
}

func TestRevocationFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"truncated":  `{"revoked": {"a": 1`,
		"no revoked": `{}`,
		"wrong type": `{"revoked": {"a": "soon"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			os.WriteFile(p, []byte(content), 0o600)
			if _, err := NewAuthority(opaqueSigner{newKey(t)}, Options{RevocationPath: p}); err == nil {
				t.Fatal("corrupt revocation list accepted")
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	f := newFixture(t, Options{})
	data, err := f.a.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), `"d"`) {
		t.Fatalf("JWKS carries private key material: %s", data)
	}
	set, err := jwk.Parse(data)
	if err != nil || set.Len() != 1 {
		t.Fatalf("JWKS %s: %v", data, err)
	}
	key, _ := set.Key(0)
	kid, _ := key.KeyID()
	alg, _ := key.Algorithm()
	use, _ := key.KeyUsage()
	if kid != f.a.kid || alg.String() != "ES256" || use != "sig" {
		t.Fatalf("JWKS key kid=%q alg=%v use=%q", kid, alg, use)
	}
	var pub ecdsa.PublicKey
	if err := jwk.Export(key, &pub); err != nil || !pub.Equal(&f.key.PublicKey) {
		t.Fatalf("JWKS key is not the token key: %v", err)
	}
	// A relying party holding only the JWKS verifies a token by its kid.
	tok, _ := f.mint(t, 1, signCap, 0)
	if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set, jws.WithRequireKid(true))); err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
}

// TestRevocationQuota: a uid's revocations of its own tokens in force are
// bounded (MaxRevocationsPerUID), across restarts; re-revoking, other uids,
// root's tokens and revocations by ID alone are not held back, and the
// quota frees as entries are pruned.
func TestRevocationQuota(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Options{})
	exp := f.clock.Now().Add(time.Hour)
	full := revocationFile{Revoked: map[string]int64{}, Owners: map[string]uint32{}}
	for i := range MaxRevocationsPerUID {
		id := fmt.Sprintf("t%d", i)
		full.Revoked[id], full.Owners[id] = exp.Unix(), 1000
	}
	full.Revoked["legacy"] = exp.Unix() // a list written before owners: no uid
	data, _ := json.Marshal(full)
	if err := os.WriteFile(f.opts.RevocationPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a := f.restart(t)
	claims := func(id string, uid uint32) *Claims { return &Claims{ID: id, UID: uid, Expiry: exp} }

	wantErr(t, a.RevokeToken(ctx, claims("one-more", 1000)), ErrTooManyRevocations)
	for _, c := range []*Claims{claims("t7", 1000), claims("other-uid", 1001), claims("roots", 0)} {
		if err := a.RevokeToken(ctx, c); err != nil {
			t.Errorf("RevokeToken(%s of uid %d): %v", c.ID, c.UID, err)
		}
	}
	if err := a.Revoke(ctx, "by-id", time.Time{}); err != nil {
		t.Errorf("Revoke by ID: %v", err)
	}
	// Pruned with their tokens' expiry, the entries free the quota.
	f.clock.Add(time.Hour + pruneMargin + time.Second)
	if err := a.RevokeToken(ctx, &Claims{ID: "later", UID: 1000, Expiry: f.clock.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("after the entries expired: %v", err)
	}
}
