package keyd

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"net/http"
	"testing"
)

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// TestKeyRoutes covers K1–K3 (symmetric keys by ID, delete by handle).
func TestKeyRoutes(t *testing.T) {
	e := newEnv(t)
	key := bytes.Repeat([]byte{7}, 32)
	imported := e.importKey("k-imp", key)
	kp := e.keyPair("kp", "")
	cases := []struct {
		name   string
		uid    uint32
		method string
		target string
		body   any
		want   check
	}{
		{"create", root, "POST", "/key", `{"keyId":"k-new","usage":"sign"}`, check{200, ""}},
		{"create with keyBytes null", root, "POST", "/key", `{"keyId":"k-null","usage":"derive,sign","keyBytes":null}`, check{200, ""}},
		{"create without usage", root, "POST", "/key", `{"keyId":"k-x"}`, check{422, "missing field `usage`"}},
		{"unknown usage", root, "POST", "/key", `{"keyId":"k-x","usage":"sign,bogus"}`, check{422, `invalid value: string "bogus", expected KeyUsage`}},
		{"empty usage", root, "POST", "/key", `{"keyId":"k-x","usage":""}`, check{422, `invalid value: string "", expected KeyUsage`}},
		{"usage not a string", root, "POST", "/key", `{"keyId":"k-x","usage":1}`, check{422, ""}},
		{"keyBytes not base64", root, "POST", "/key", `{"keyId":"k-x","usage":"sign","keyBytes":"!!"}`, check{422, ""}},
		{"keyId missing", root, "POST", "/key", `{"usage":"sign"}`, check{422, "missing field `keyId`"}},
		{"keyId null", root, "POST", "/key", `{"keyId":null,"usage":"sign"}`, check{422, ""}},
		{"no body", root, "POST", "/key", "", check{400, "missing request body"}},
		{"malformed JSON", root, "POST", "/key", `{"keyId":`, check{422, ""}},
		{"body not an object", root, "POST", "/key", `[1]`, check{422, ""}},
		{"NUL in keyId", root, "POST", "/key", `{"keyId":"a\u0000b","usage":"sign"}`, check{400, "parameter \"id\" has an invalid value\ncaused by: nul byte found in provided data at position: 1"}},
		{"empty keyId", root, "POST", "/key", `{"keyId":"","usage":"sign"}`, check{400, msgBadParameter}},
		{"principal creates its key", uidA, "POST", "/key", `{"keyId":"a-1","usage":"sign"}`, check{200, ""}},
		{"principal refused another key", uidA, "POST", "/key", `{"keyId":"b-1","usage":"sign"}`, check{401, "user 1000 is not authorized to access the key b-1"}},
		{"principal refused import of another key", uidA, "POST", "/key", `{"keyId":"b-1","usage":"sign","keyBytes":"AAAA"}`, check{401, "user 1000 is not authorized to access the key b-1"}},
		{"load", root, "GET", "/key/k-imp", nil, check{200, ""}},
		{"load missing", root, "GET", "/key/k-missing", nil, check{400, msgBadParameter}},
		{"load refused", uidA, "GET", "/key/k-imp", nil, check{401, "user 1000 is not authorized to access the key k-imp"}},
		{"load a principal's missing key", uidA, "GET", "/key/a-none", nil, check{400, msgBadParameter}},
		{"load, api-version 2020-09-01", root, "GET", "/key/k-imp?api-version=2020-09-01", nil, check{200, ""}},
		{"delete with a key-pair handle", root, "DELETE", "/key", map[string]string{"keyHandle": kp}, check{400, msgNotKey}},
		{"delete with a forged handle", root, "DELETE", "/key", map[string]string{"keyHandle": "sr=e30=&sig=AAAA"}, check{400, msgInvalidHandle}},
		{"delete without keyHandle", root, "DELETE", "/key", `{}`, check{422, "missing field `keyHandle`"}},
		{"move onto a key", root, "POST", "/key/k-imp", `{"from":"k-other"}`, check{400, `invalid type "key"`}},
		{"move onto a key, identical", root, "POST", "/key/k-imp", `{"from":"k-imp"}`, check{400, "source and destination for move are identical"}},
		{"move onto a key, no from", root, "POST", "/key/k-imp", `{}`, check{422, "missing field `from`"}},
		{"PUT", root, "PUT", "/key", `{}`, check{400, "method not allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.body != nil {
				body = jsonBody(tc.body)
			}
			tc.want.verify(t, e.call(tc.uid, "", tc.method, tc.target, body))
		})
	}

	t.Run("import overwrites, create does not", func(t *testing.T) {
		msg := []byte("message")
		sign := func(h string) []byte {
			r := e.post("/sign", map[string]any{"keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": msg}})
			check{200, ""}.verify(t, r)
			return r.bytes("signature")
		}
		if got := sign(imported); !hmac.Equal(got, hmacSHA256(key, msg)) {
			t.Fatal("HMAC with the imported key differs from Go's")
		}
		e.handle(e.post("/key", `{"keyId":"k-imp","usage":"sign"}`))
		if got := sign(imported); !hmac.Equal(got, hmacSHA256(key, msg)) {
			t.Fatal("create-if-not-exists replaced an existing key")
		}
		key2 := bytes.Repeat([]byte{9}, 32)
		e.importKey("k-imp", key2)
		if got := sign(imported); !hmac.Equal(got, hmacSHA256(key2, msg)) {
			t.Fatal("import did not overwrite the key")
		}
	})

	t.Run("delete", func(t *testing.T) {
		h := e.importKey("k-del", key)
		for range 2 { // absent is not an error
			check{204, ""}.verify(t, e.call(root, "", "DELETE", "/key", jsonBody(map[string]string{"keyHandle": h})))
		}
		check{400, msgBadParameter}.verify(t, e.call(root, "", "GET", "/key/k-del", ""))
		// DELETE /key is a 2021-05-01 addition that aziot serves on 2020-09-01 too.
		check{204, ""}.verify(t, e.call(root, "", "DELETE", "/key?api-version=2020-09-01", jsonBody(map[string]string{"keyHandle": h})))
	})
}

// TestKeyPairRoutes covers K4–K7.
func TestKeyPairRoutes(t *testing.T) {
	e := newEnv(t)
	key := e.importKey("k", bytes.Repeat([]byte{1}, 32))
	cases := []struct {
		name   string
		uid    uint32
		method string
		target string
		body   string
		want   check
		alg    string // the algorithm of the created key pair
	}{
		{"create, default algorithm", root, "POST", "/keypair", `{"keyId":"kp-default"}`, check{200, ""}, "ECDSA"},
		{"create, null algorithms", root, "POST", "/keypair", `{"keyId":"kp-null","preferredAlgorithms":null}`, check{200, ""}, "ECDSA"},
		{"create rsa-2048", root, "POST", "/keypair", `{"keyId":"kp-rsa","preferredAlgorithms":"rsa-2048:*"}`, check{200, ""}, "RSA"},
		{"create, unknown first", root, "POST", "/keypair", `{"keyId":"kp-u","preferredAlgorithms":"ed25519:ec-p256"}`, check{200, ""}, "ECDSA"},
		{"create, star", root, "POST", "/keypair", `{"keyId":"kp-star","preferredAlgorithms":"*"}`, check{200, ""}, "ECDSA"},
		{"create, empty algorithms", root, "POST", "/keypair", `{"keyId":"kp-e","preferredAlgorithms":""}`, check{400, msgBadParameter}, ""},
		{"create, only unknown algorithms", root, "POST", "/keypair", `{"keyId":"kp-e","preferredAlgorithms":"p-384"}`, check{400, msgBadParameter}, ""},
		{"create, algorithms not a string", root, "POST", "/keypair", `{"keyId":"kp-e","preferredAlgorithms":1}`, check{422, ""}, ""},
		{"create, no keyId", root, "POST", "/keypair", `{}`, check{422, "missing field `keyId`"}, ""},
		{"create, no body", root, "POST", "/keypair", "", check{400, "missing request body"}, ""},
		{"principal creates its key pair", uidA, "POST", "/keypair", `{"keyId":"a-kp"}`, check{200, ""}, "ECDSA"},
		{"principal refused", uidA, "POST", "/keypair", `{"keyId":"b-kp"}`, check{401, "user 1000 is not authorized to access the key b-kp"}, ""},
		{"load", root, "GET", "/keypair/kp-default", "", check{200, ""}, "ECDSA"},
		{"load missing", root, "GET", "/keypair/none", "", check{400, msgBadParameter}, ""},
		{"load refused", uidA, "GET", "/keypair/kp-default", "", check{401, "user 1000 is not authorized to access the key kp-default"}, ""},
		{"load, escaped slash in the ID", root, "GET", "/keypair/no%2Fsuch", "", check{400, msgBadParameter}, ""},
		{"delete with a key handle", root, "DELETE", "/keypair", jsonBody(map[string]string{"keyHandle": key}), check{400, msgNotKeyPair}, ""},
		{"delete, no body", root, "DELETE", "/keypair", "", check{400, "missing request body"}, ""},
		{"move identical", root, "POST", "/keypair/kp-default", `{"from":"kp-default"}`, check{400, "source and destination for move are identical"}, ""},
		{"move missing source", root, "POST", "/keypair/kp-dest", `{"from":"none"}`, check{400, msgBadParameter}, ""},
		{"move, source refused", uidA, "POST", "/keypair/a-kp2", `{"from":"kp-default"}`, check{401, "user 1000 is not authorized to access the key kp-default"}, ""},
		{"move, destination refused", uidA, "POST", "/keypair/b-kp2", `{"from":"a-kp"}`, check{401, "user 1000 is not authorized to access the key b-kp2"}, ""},
		{"move, from not a string", root, "POST", "/keypair/x", `{"from":3}`, check{422, ""}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call(tc.uid, "", tc.method, tc.target, tc.body)
			tc.want.verify(t, r)
			if tc.alg != "" {
				p := e.post("/parameters/algorithm", map[string]string{"keyHandle": r.field("keyHandle")})
				if p.field("value") != tc.alg {
					t.Fatalf("algorithm %s, want %s", p.body, tc.alg)
				}
			}
		})
	}

	t.Run("create if not exists keeps the key", func(t *testing.T) {
		h1 := e.keyPair("kp-keep", "")
		h2 := e.keyPair("kp-keep", "rsa-2048")
		p1 := e.post("/parameters/ec-point", map[string]string{"keyHandle": h1})
		p2 := e.post("/parameters/ec-point", map[string]string{"keyHandle": h2})
		if h1 == h2 || p1.status != 200 || p1.body != p2.body {
			t.Fatalf("second create changed the key or reused the handle: %s / %s", p1.body, p2.body)
		}
	})

	t.Run("move then delete", func(t *testing.T) {
		h := e.keyPair("kp-src", "")
		point := e.post("/parameters/ec-point", map[string]string{"keyHandle": h}).body
		e.keyPair("kp-dst", "rsa-2048")
		check{204, ""}.verify(t, e.call(root, "", "POST", "/keypair/kp-dst", `{"from":"kp-src"}`))
		check{400, msgBadParameter}.verify(t, e.call(root, "", "GET", "/keypair/kp-src", ""))
		moved := e.handle(e.call(root, "", "GET", "/keypair/kp-dst", ""))
		if got := e.post("/parameters/ec-point", map[string]string{"keyHandle": moved}).body; got != point {
			t.Fatalf("moved key differs: %s, want %s", got, point)
		}
		for range 2 {
			check{204, ""}.verify(t, e.call(root, "", "DELETE", "/keypair?api-version=2020-09-01", jsonBody(map[string]string{"keyHandle": moved})))
		}
		check{400, msgBadParameter}.verify(t, e.call(root, "", "GET", "/keypair/kp-dst", ""))
		// A principal may move between its own keys.
		e.keyPair("a-src", "")
		check{204, ""}.verify(t, e.call(uidA, "", "POST", "/keypair/a-dst", `{"from":"a-src"}`))
	})
	_ = http.MethodGet
}
