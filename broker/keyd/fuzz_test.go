package keyd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/api/apitest"
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
		apitest.CheckAnswer(t, fmt.Sprintf("%s %s %q", rt.method, rt.target, body), r.status, r.body)
	})
}

// FuzzEachMember: on every JSON object encoding/json accepts, eachMember
// finds the same members with the same values as encoding/json does.
func FuzzEachMember(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":"x","c":{"d":[1,{"e":"}"}]},"f":null}`, ` { "k\u0041" : true , "a":"\"}" } `, `{"a":1,"a":2}`, `[1]`, `"s"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var want map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &want) != nil || want == nil {
			return // not an object: encoding/json never hands it to UnmarshalJSON
		}
		got := map[string]json.RawMessage{}
		if err := eachMember([]byte(body), func(k, v []byte) {
			key, ok := api.Unquote(k)
			if !ok {
				json.Unmarshal([]byte(`"`+string(k)+`"`), &key)
			}
			got[key] = append(json.RawMessage(nil), v...)
		}); err != nil {
			t.Fatalf("eachMember(%q): %v", body, err)
		}
		if len(got) != len(want) {
			t.Fatalf("eachMember(%q) found %d members, encoding/json %d", body, len(got), len(want))
		}
		for k, w := range want {
			var a, b bytes.Buffer
			json.Compact(&a, w)
			json.Compact(&b, got[k])
			if a.String() != b.String() {
				t.Fatalf("eachMember(%q): member %q = %s, encoding/json %s", body, k, got[k], w)
			}
		}
	})
}
