package keyd

import (
	"encoding/json"
	"net/http"
	"testing"
)

// routes lists every keyd route with a method that takes a body.
var fuzzRoutes = []struct{ method, target string }{
	{"POST", "/key"},
	{"DELETE", "/key"},
	{"POST", "/key/a-1"},
	{"POST", "/keypair"},
	{"DELETE", "/keypair"},
	{"POST", "/keypair/a-2"},
	{"POST", "/parameters/algorithm"},
	{"POST", "/parameters/ec-point"},
	{"POST", "/derivedkey"},
	{"POST", "/derivedkey/export"},
	{"POST", "/sign"},
	{"POST", "/encrypt"},
	{"POST", "/decrypt"},
}

// FuzzKeydRequest sends arbitrary bodies to every route's decoder through
// the handler, in-process: it must never panic, never answer 500, and
// every error must be aziot's {"message": "…"} with a 4xx status.
func FuzzKeydRequest(f *testing.F) {
	e := newEnv(f)
	key := e.post("/key", `{"keyId":"a-k","usage":"sign","keyBytes":"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="}`).field("keyHandle")
	kp := e.post("/keypair", `{"keyId":"a-kp"}`).field("keyHandle")
	seeds := []string{
		`{"keyId":"a-1","usage":"derive,sign"}`,
		`{"keyId":"a-1","usage":"encrypt","keyBytes":"AAAA"}`,
		`{"keyId":"a-1","preferredAlgorithms":"rsa-2048:*"}`,
		`{"from":"a-3"}`,
		`{"keyHandle":"` + key + `"}`,
		`{"keyHandle":"` + kp + `"}`,
		`{"baseKeyHandle":"` + key + `","derivationData":"AQID"}`,
		`{"keyHandle":"` + kp + `","algorithm":"ECDSA","parameters":{"digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`,
		`{"keyHandle":"` + key + `","algorithm":"HMAC-SHA256","parameters":{"message":"AA=="}}`,
		`{"keyHandle":"` + key + `","algorithm":"AEAD","parameters":{"iv":"AAAAAAAAAAAAAAAA","aad":""},"plaintext":"AA==","ciphertext":"AgAAAAAAAAAAAAAAAAAAAAAA"}`,
		`{"keyHandle":"` + kp + `","algorithm":"RSA-NO-PADDING","parameters":null,"plaintext":"AA=="}`,
		`{"keyHandle":"sr=e30=&sig=","algorithm":7}`,
		`{"keyId":"\u0000","usage":","}`,
		`[]`, `null`, `"x"`, `{`, ``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		// A uid without a principal: every body reaches its decoder (which
		// runs before authorization) but no key is generated, which keeps
		// the fuzzer fast (an rsa-4096 key takes seconds).
		r := e.call(4242, "", rt.method, rt.target, body)
		switch {
		case r.status == http.StatusOK || r.status == http.StatusNoContent:
			return
		case r.status < 400 || r.status >= 500:
			t.Fatalf("%s %s %q: status %d %s", rt.method, rt.target, body, r.status, r.body)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.body), &m); err != nil || len(m) != 1 {
			t.Fatalf("%s %s %q: error body %s is not {\"message\"}", rt.method, rt.target, body, r.body)
		}
		if msg, ok := m["message"].(string); !ok || msg == "" {
			t.Fatalf("%s %s %q: empty message: %s", rt.method, rt.target, body, r.body)
		}
	})
}
