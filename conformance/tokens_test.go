package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
)

type minted struct {
	Token     string `json:"token"`
	ID        string `json:"id"`
	ExpiresAt string `json:"expiresAt"`
}

func decodeMinted(t *testing.T, r response) minted {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("token request: %d %s", r.Status, r.Body)
	}
	var m minted
	if err := json.Unmarshal(r.Body, &m); err != nil || m.Token == "" || m.ID == "" {
		t.Fatalf("token response %s: %v", r.Body, err)
	}
	return m
}

func caps(res string, ops ...string) []map[string]any {
	return []map[string]any{{"resource": res, "ops": ops}}
}

// trustBundle is a request a token scoped to identity:* trust_bundle covers.
func (d *daemon) trustBundle(tok string) request {
	return request{Socket: d.socket("identityd"), Method: "GET", Target: "/trust-bundle?api-version=2020-09-01", Header: bearer(tok)}
}

// TestTokenBoundToUID: a token handed to uid A works on A's connections and
// is refused on B's, and a token never grants more than its scope.
func TestTokenBoundToUID(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "")
	root := decodeMinted(t, do(t, d.post("/tokens", map[string]any{"capabilities": caps("identity:*", "trust_bundle"), "ttlSeconds": 300}, nil)))
	forA := decodeMinted(t, do(t, d.post("/tokens/attenuate", map[string]any{
		"token": root.Token, "capabilities": caps("identity:*", "trust_bundle"), "uid": uidA}, nil)))

	if r := doAs(t, uidA, d.trustBundle(forA.Token)); r.Status != 200 || string(r.Body) != `{"certificate":""}` {
		t.Fatalf("uid A with its token: %d %s", r.Status, r.Body)
	}
	r := doAs(t, uidB, d.trustBundle(forA.Token))
	if r.Status != 401 || !strings.Contains(r.message(), "another uid") {
		t.Fatalf("uid B with A's token: %d %s, want 401 naming the uid binding", r.Status, r.Body)
	}
	if r := do(t, d.trustBundle(forA.Token)); r.Status != 401 {
		t.Fatalf("root with A's token: %d, want 401", r.Status)
	}
	// A token bounds its bearer: with a key-only token, even an open route is refused.
	keyTok := decodeMinted(t, doAs(t, uidA, d.post("/tokens", map[string]any{"capabilities": caps("key:a-1", "sign")}, nil)))
	if r := doAs(t, uidA, d.trustBundle(keyTok.Token)); r.Status != 401 || r.message() != "authorization error" {
		t.Fatalf("out-of-scope token: %d %s, want 401 authorization error", r.Status, r.Body)
	}
	// Without a token, the open route is served.
	if r := doAs(t, uidB, request{Socket: d.socket("identityd"), Method: "GET", Target: "/trust-bundle?api-version=2020-09-01"}); r.Status != 200 {
		t.Fatalf("no token: %d %s", r.Status, r.Body)
	}
}

// TestMintPolicy: a non-root principal may mint only what policy already
// lets it do, and may attenuate only to itself.
func TestMintPolicy(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "")
	cases := []struct {
		name   string
		uid    uint32
		caps   []map[string]any
		status int
	}{
		{"own key glob, ID op", uidA, caps("key:a-1", "load", "sign"), 200},
		{"own key prefix wildcard", uidA, caps("key:a-x*", "load"), 200},
		{"handle op on any key", uidA, caps("key:other", "sign"), 200},
		{"ID op outside its globs", uidA, caps("key:other", "load"), 401},
		{"wider wildcard than its glob", uidA, caps("key:*", "create"), 401},
		{"identity of another module", uidB, caps("identity:module:agent-a", "get"), 401},
		{"bad resource", uidA, caps("disk:/etc", "read"), 400},
		{"no ops", uidA, []map[string]any{{"resource": "key:a-1", "ops": []string{}}}, 400},
	}
	for _, c := range cases {
		r := doAs(t, c.uid, d.post("/tokens", map[string]any{"capabilities": c.caps}, nil))
		if r.Status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, r.Status, r.Body, c.status)
		}
	}
	if r := do(t, d.post("/tokens", map[string]any{"capabilities": caps("key:*", "create"), "ttlSeconds": 7200}, nil)); r.Status != 400 {
		t.Errorf("ttl over max_ttl: %d %s, want 400", r.Status, r.Body)
	}
	own := decodeMinted(t, doAs(t, uidA, d.post("/tokens", map[string]any{"capabilities": caps("key:a-1", "sign")}, nil)))
	if r := doAs(t, uidA, d.post("/tokens/attenuate", map[string]any{"token": own.Token, "capabilities": caps("key:a-1", "sign"), "uid": uidB}, nil)); r.Status != 401 {
		t.Errorf("non-root attenuates to another uid: %d %s, want 401", r.Status, r.Body)
	}
	if r := doAs(t, uidA, d.post("/tokens/attenuate", map[string]any{"token": own.Token, "capabilities": caps("key:a-1", "sign")}, nil)); r.Status != 200 {
		t.Errorf("non-root attenuates to itself: %d %s", r.Status, r.Body)
	}
}

// TestTokenRefusals: expired, revoked (also after a restart), tampered,
// alg none and foreign-key tokens are all 401.
func TestTokenRefusals(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "")
	mint := func(ttl int) minted {
		root := decodeMinted(t, do(t, d.post("/tokens", map[string]any{"capabilities": caps("identity:*", "trust_bundle"), "ttlSeconds": ttl}, nil)))
		return decodeMinted(t, do(t, d.post("/tokens/attenuate", map[string]any{"token": root.Token, "capabilities": caps("identity:*", "trust_bundle"), "uid": uidA}, nil)))
	}
	expect401 := func(name, tok, reason string) {
		t.Helper()
		r := doAs(t, uidA, d.trustBundle(tok))
		if r.Status != 401 || !strings.Contains(r.message(), reason) {
			t.Errorf("%s: %d %s, want 401 with %q", name, r.Status, r.Body, reason)
		}
		if strings.Contains(string(r.Body), tok) {
			t.Errorf("%s: the response echoes the token", name)
		}
	}

	good := mint(300)
	if r := doAs(t, uidA, d.trustBundle(good.Token)); r.Status != 200 {
		t.Fatalf("valid token: %d %s", r.Status, r.Body)
	}
	parts := strings.Split(good.Token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"uid":1000`, `"uid":1001`, 1))) + "." + parts[2]
	expect401("tampered payload", tampered, "invalid")
	expect401("alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"warden-cap+jwt"}`))+"."+parts[1]+".", "invalid")
	expect401("garbage", "not.a.token", "invalid")

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hdr := jws.NewHeaders()
	hdr.Set("typ", "warden-cap+jwt")
	forged, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), other, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	expect401("signed by another key", string(forged), "invalid")

	short := mint(1)
	deadline := time.Now().Add(10 * time.Second)
	for doAs(t, uidA, d.trustBundle(short.Token)).Status == 200 {
		if time.Now().After(deadline) {
			t.Fatal("a 1-second token still works after 10 seconds")
		}
		time.Sleep(200 * time.Millisecond)
	}
	expect401("expired", short.Token, "expired")

	revoked := mint(300)
	if r := do(t, d.post("/tokens/revoke", map[string]any{"id": revoked.ID}, nil)); r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	expect401("revoked", revoked.Token, "revoked")
	d.restart()
	expect401("revoked, after a restart", revoked.Token, "revoked")
	if r := doAs(t, uidA, d.trustBundle(good.Token)); r.Status != 200 {
		t.Fatalf("a valid token after a restart: %d %s", r.Status, r.Body)
	}
}

// TestAttenuation: a child cannot widen its parent's scope or outlive it,
// and revoking a parent revokes its descendants.
func TestAttenuation(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "")
	parent := decodeMinted(t, do(t, d.post("/tokens", map[string]any{"capabilities": caps("identity:*", "trust_bundle"), "ttlSeconds": 120}, nil)))
	widen := []struct {
		name string
		caps []map[string]any
	}{
		{"another op", caps("identity:*", "trust_bundle", "get")},
		{"another resource", caps("key:x", "sign")},
		{"wider wildcard", caps("*", "trust_bundle")},
	}
	for _, w := range widen {
		r := do(t, d.post("/tokens/attenuate", map[string]any{"token": parent.Token, "capabilities": w.caps}, nil))
		if r.Status != 400 {
			t.Errorf("attenuate to %s: %d %s, want 400", w.name, r.Status, r.Body)
		}
	}
	child := decodeMinted(t, do(t, d.post("/tokens/attenuate", map[string]any{"token": parent.Token, "capabilities": caps("identity:*", "trust_bundle"), "ttlSeconds": 3000, "uid": uidA}, nil)))
	pexp, _ := time.Parse(time.RFC3339, parent.ExpiresAt)
	cexp, _ := time.Parse(time.RFC3339, child.ExpiresAt)
	if cexp.After(pexp) {
		t.Errorf("child expires %v, after its parent %v", cexp, pexp)
	}
	grandchild := decodeMinted(t, doAs(t, uidA, d.post("/tokens/attenuate", map[string]any{"token": child.Token, "capabilities": caps("identity:*", "trust_bundle")}, nil)))
	for _, tok := range []string{child.Token, grandchild.Token} {
		if r := doAs(t, uidA, d.trustBundle(tok)); r.Status != 200 {
			t.Fatalf("descendant before revocation: %d %s", r.Status, r.Body)
		}
	}
	if r := do(t, d.post("/tokens/revoke", map[string]any{"token": parent.Token}, nil)); r.Status != 204 {
		t.Fatalf("revoke parent: %d %s", r.Status, r.Body)
	}
	for name, tok := range map[string]string{"child": child.Token, "grandchild": grandchild.Token} {
		if r := doAs(t, uidA, d.trustBundle(tok)); r.Status != 401 || !strings.Contains(r.message(), "revoked") {
			t.Errorf("%s after its ancestor was revoked: %d %s", name, r.Status, r.Body)
		}
	}
	var intro map[string]any
	r := do(t, d.post("/tokens/introspect", map[string]any{"token": child.Token}, nil))
	if err := json.Unmarshal(r.Body, &intro); err != nil || intro["active"] != false || intro["par"] != parent.ID {
		t.Errorf("introspect revoked child: %d %s", r.Status, r.Body)
	}
	// uid A may not revoke by bare id; root may.
	if r := doAs(t, uidA, d.post("/tokens/revoke", map[string]any{"id": grandchild.ID}, nil)); r.Status != 401 {
		t.Errorf("non-root revoke by id: %d, want 401", r.Status)
	}
}

// TestJWKS: the public token key is published, without private parts.
func TestJWKS(t *testing.T) {
	d := startDaemon(t, "")
	r := do(t, request{Socket: d.socket("broker"), Method: "GET", Target: "/jwks?api-version=2026-12-01"})
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if r.Status != 200 || json.Unmarshal(r.Body, &set) != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks: %d %s", r.Status, r.Body)
	}
	if _, private := set.Keys[0]["d"]; private || set.Keys[0]["kty"] != "EC" {
		t.Fatalf("jwks key %v", set.Keys[0])
	}
}
