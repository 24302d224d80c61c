package capabilities

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary strings to Verify and Inspect: they must never
// panic, and nothing but the seed token may verify. A byte-level variant of
// the seed can still verify when its encoding is not canonical (JWS is
// malleable in base64 trailing bits and ECDSA s); it must then carry the
// seed's claims, so it is revoked with it and grants nothing more.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, Options{CacheSize: 64})
	good, claims := fx.mint(f, 1000, caps("key:*=sign", "identity:module:m1=get"), time.Hour)
	child, _, err := fx.a.Attenuate(ctx, good, 1000, signCap, 0, 7)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	for _, s := range []string{
		good, child, "", ".", "..", "a.b.c", parts[0] + "." + parts[1] + ".",
		parts[0] + ".e30." + parts[2], good[:len(good)-1], strings.ToUpper(good),
		craft(f, fx.key, fx.header(), fx.validClaims(1000)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := fx.a.Verify(ctx, token, 1000)
		if c2, err2 := fx.a.Inspect(ctx, token); (err2 == nil) != (c2 != nil) {
			t.Fatalf("Inspect returned claims %v and error %v", c2, err2)
		}
		if err != nil {
			if c != nil {
				t.Fatal("claims returned with an error")
			}
			if len(token) > 8 && strings.Contains(err.Error(), token) {
				t.Fatal("error message contains the token")
			}
			return
		}
		if token == good {
			return
		}
		if c.ID != claims.ID && c.ID != "AAAAAAAAAAAAAAAAAAAAAA" {
			t.Fatalf("a fuzzed token verified with new claims %+v", c)
		}
	})
}

// FuzzParseResource checks the resource syntax and its consistency with
// Covers and Within on arbitrary pairs of resources.
func FuzzParseResource(f *testing.F) {
	for _, s := range []string{
		"key:device-id", "key:*", "key:dev*", "cert:a", "identity:device", "identity:module:m",
		"identity:module:*", "identity:*", "tpm:keys", "tpm:authkey", "tpm:*", "*", "key:a*b", "",
	} {
		f.Add(s, "key:*")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		errA, errB := parseResource(a), parseResource(b)
		if errA != nil {
			if ValidateResource(a) == nil {
				t.Fatal("ValidateResource disagrees with parseResource")
			}
			return
		}
		if len(a) > maxResourceLen || strings.Count(a, "*") > 1 || strings.Contains(a[:len(a)-1], "*") {
			t.Fatalf("accepted %q", a)
		}
		kind, _, _ := strings.Cut(a, ":")
		if kind != "key" && kind != "cert" && kind != "identity" && kind != "tpm" {
			t.Fatalf("accepted %q of kind %q", a, kind)
		}
		ca := []Capability{{Resource: a, Ops: []string{"sign"}}}
		if !Within(ca, ca) {
			t.Fatalf("%q is not within itself", a)
		}
		prefix, wild := strings.CutSuffix(a, "*")
		if !(&Claims{Capabilities: ca}).Covers(prefix+"x", "sign") && wild {
			t.Fatalf("%q does not cover %q", a, prefix+"x")
		}
		if errB != nil {
			return
		}
		cb := []Capability{{Resource: b, Ops: []string{"sign"}}}
		// If a is within b, every concrete resource a covers, b covers too.
		if Within(ca, cb) {
			probe := a
			if wild {
				probe = prefix + "probe"
			}
			if !(&Claims{Capabilities: cb}).Covers(probe, "sign") {
				t.Fatalf("%q within %q but %q is not covered by it", a, b, probe)
			}
		}
		// An exact resource is within b exactly when b covers it.
		if !wild && Within(ca, cb) != (&Claims{Capabilities: cb}).Covers(a, "sign") {
			t.Fatalf("Within(%q, %q) disagrees with Covers", a, b)
		}
	})
}
