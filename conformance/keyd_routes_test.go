package conformance

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Messages of aziot's keyd (aziot-api.md §3).
const (
	kmsgInvalidHandle = "parameter \"handle\" has an invalid value\ncaused by: invalid handle"
	kmsgBadParameter  = "a parameter has an invalid value"
	kmsgMechanism     = "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type"
	kmsgNotKey        = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key"
	kmsgNotKeyPair    = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key pair"
	kmsgNotDerived    = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a derived key"
	kmsgNested        = "parameter \"handle\" has an invalid value\ncaused by: nested derived keys are not supported, import the outer derived key first"
	kmsgIdentical     = "source and destination for move are identical"
	kmsgNoBody        = "missing request body"
)

// keydFixture is a daemon with keys of every kind and their handles.
type keydFixture struct {
	*keydConn
	signKey, encKey        []byte // imported symmetric keys (derive,sign) and (encrypt)
	sign, enc, derived     string // handles: Key, Key, Derived (of sign)
	derivedEnc             string // Derived of enc
	ec, rsa, preEC, preRSA string // KeyPair handles
	derivationData         []byte
	nested                 string // a derived handle whose base is derived (built by hand: keyd refuses to issue it)
}

func newKeydFixture(t *testing.T, b keydBackend) *keydFixture {
	t.Helper()
	pre, ecPriv, rsaPriv := preloadedKeys(t)
	k := startKeyd(t, b, pre)
	k.addKeySecrets("preloaded EC key", ecPriv)
	k.addKeySecrets("preloaded RSA key", rsaPriv)
	f := &keydFixture{keydConn: k, signKey: bytes.Repeat([]byte{0x5a}, 32), encKey: bytes.Repeat([]byte{0xa5}, 32),
		derivationData: []byte("module-1:1:primary")}
	k.addSecret("imported signing key", f.signKey)
	k.addSecret("imported encryption key", f.encKey)
	f.sign = k.handle(k.call("POST", "/key", map[string]any{"keyId": "k-sign", "usage": "derive,sign", "keyBytes": f.signKey}))
	f.enc = k.handle(k.call("POST", "/key", map[string]any{"keyId": "k-enc", "usage": "encrypt", "keyBytes": f.encKey}))
	f.ec = k.handle(k.call("POST", "/keypair", map[string]any{"keyId": "kp-ec", "preferredAlgorithms": "ec-p256"}))
	f.rsa = k.handle(k.call("POST", "/keypair", map[string]any{"keyId": "kp-rsa", "preferredAlgorithms": "rsa-2048"}))
	f.preEC = k.handle(k.call("GET", "/keypair/pre-ec", nil))
	f.preRSA = k.handle(k.call("GET", "/keypair/pre-rsa", nil))
	f.derived = k.handle(k.call("POST", "/derivedkey", map[string]any{"baseKeyHandle": f.sign, "derivationData": f.derivationData}))
	// Derive from the derive/sign key: derivation is an HMAC, which a
	// PKCS#11 AES (encrypt) key cannot do, in aziot as here.
	f.derivedEnc = k.handle(k.call("POST", "/derivedkey", map[string]any{"baseKeyHandle": f.sign, "derivationData": []byte("enc")}))
	return f
}

// tamperHandle flips one character of the handle's signature.
func tamperHandle(h string) string {
	i := strings.Index(h, "&sig=") + len("&sig=")
	c := "A"
	if h[i] == 'A' {
		c = "B"
	}
	return h[:i] + c + h[i+1:]
}

type keydCase struct {
	name   string
	method string
	path   string
	body   any // JSON-encoded unless a string; nil: no body
	status int
	msg    string // exact message; "" checks only the shape
}

func runKeydCases(t *testing.T, k *keydConn, uid uint32, cases []keydCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r response
			if uid == 0 {
				r = k.call(tc.method, tc.path, tc.body)
			} else {
				r = k.callAs(uid, tc.method, tc.path, tc.body, nil)
			}
			if r.Status != tc.status {
				t.Fatalf("%s %s: status %d, want %d: %s", tc.method, tc.path, r.Status, tc.status, r.Body)
			}
			if tc.msg != "" && r.message() != tc.msg {
				t.Fatalf("%s %s: message %q, want %q", tc.method, tc.path, r.message(), tc.msg)
			}
			if r.Status >= 400 && r.message() == "" {
				t.Fatalf("%s %s: error without a message: %s", tc.method, tc.path, r.Body)
			}
			if r.Status == 204 && string(r.Body) != "null" {
				t.Fatalf("%s %s: 204 with a body: %s", tc.method, tc.path, r.Body)
			}
		})
	}
}

// TestKeydRoutes runs every documented success and error of K1–K13 (and
// the framework's cases on keyd's paths) on each backend.
func TestKeydRoutes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		f := newKeydFixture(t, b)
		d := sha256.Sum256([]byte("digest me"))
		digest := d[:]
		aead := map[string]any{"iv": []byte("123456789012"), "aad": []byte("aad")}
		hb := func(h string) map[string]string { return map[string]string{"keyHandle": h} }
		signB := func(h, alg string, data []byte) map[string]any {
			p := map[string]any{"message": data}
			if alg == "ECDSA" {
				p = map[string]any{"digest": data}
			}
			return map[string]any{"keyHandle": h, "algorithm": alg, "parameters": p}
		}
		cryptB := func(h, alg, field string, data []byte) map[string]any {
			m := map[string]any{"keyHandle": h, "algorithm": alg, field: data}
			if alg == "AEAD" {
				m["parameters"] = aead
			}
			return m
		}
		cases := []keydCase{
			// framework, on keyd's paths
			{"empty api-version", "GET", "/keypair/kp-ec?x=1&api-version=", nil, 400, `invalid api-version ""`},
			{"unknown api-version", "GET", "/keypair/kp-ec?api-version=2019-01-01", nil, 400, `invalid api-version "2019-01-01"`},
			{"unknown path", "GET", "/keys", nil, 404, "not found"},
			{"GET /sign", "GET", "/sign", nil, 400, "method not allowed"},
			{"PUT /key", "PUT", "/key", `{}`, 400, "method not allowed"},
			{"DELETE /key/{id}", "DELETE", "/key/k-sign", nil, 400, "method not allowed"},
			{"malformed JSON", "POST", "/sign", `{"keyHandle":`, 422, ""},
			// K1
			{"K1 create", "POST", "/key", map[string]any{"keyId": "k-gen", "usage": "sign"}, 200, ""},
			{"K1 create, keyBytes null", "POST", "/key", `{"keyId":"k-gen2","usage":"derive","keyBytes":null}`, 200, ""},
			{"K1 import", "POST", "/key", map[string]any{"keyId": "k-imp2", "usage": "sign", "keyBytes": []byte("0123456789abcdef0123456789abcdef")}, 200, ""},
			{"K1 no usage", "POST", "/key", `{"keyId":"k-x"}`, 422, "missing field `usage`"},
			{"K1 unknown usage", "POST", "/key", `{"keyId":"k-x","usage":"derive,verify"}`, 422, `invalid value: string "verify", expected KeyUsage`},
			{"K1 keyBytes not base64", "POST", "/key", `{"keyId":"k-x","usage":"sign","keyBytes":"*"}`, 422, ""},
			{"K1 no keyId", "POST", "/key", `{"usage":"sign"}`, 422, "missing field `keyId`"},
			{"K1 no body", "POST", "/key", nil, 400, kmsgNoBody},
			// K2
			{"K2 load", "GET", "/key/k-sign", nil, 200, ""},
			{"K2 load missing", "GET", "/key/k-missing", nil, 400, kmsgBadParameter},
			{"K2 load, 2020-09-01", "GET", "/key/k-sign?api-version=2020-09-01", nil, 200, ""},
			// K3
			{"K3 key-pair handle", "DELETE", "/key", hb(f.ec), 400, kmsgNotKey},
			{"K3 derived handle", "DELETE", "/key", hb(f.derived), 400, kmsgNotKey},
			{"K3 tampered handle", "DELETE", "/key", hb(tamperHandle(f.sign)), 400, kmsgInvalidHandle},
			{"K3 no body", "DELETE", "/key", nil, 400, kmsgNoBody},
			// K4
			{"K4 create default", "POST", "/keypair", `{"keyId":"kp-def"}`, 200, ""},
			{"K4 create, null algorithms", "POST", "/keypair", `{"keyId":"kp-null","preferredAlgorithms":null}`, 200, ""},
			{"K4 create rsa-2048:*", "POST", "/keypair", `{"keyId":"kp-r","preferredAlgorithms":"rsa-2048:*"}`, 200, ""},
			{"K4 no usable algorithm", "POST", "/keypair", `{"keyId":"kp-none","preferredAlgorithms":"ed25519"}`, 400, kmsgBadParameter},
			{"K4 no keyId", "POST", "/keypair", `{"preferredAlgorithms":"*"}`, 422, "missing field `keyId`"},
			// K5
			{"K5 load", "GET", "/keypair/kp-ec", nil, 200, ""},
			{"K5 load preloaded", "GET", "/keypair/pre-rsa", nil, 200, ""},
			{"K5 load missing", "GET", "/keypair/kp-missing", nil, 400, kmsgBadParameter},
			// K6
			{"K6 identical", "POST", "/keypair/kp-ec", `{"from":"kp-ec"}`, 400, kmsgIdentical},
			{"K6 on /key", "POST", "/key/k-sign", `{"from":"k-enc"}`, 400, `invalid type "key"`},
			{"K6 missing source", "POST", "/keypair/kp-to", `{"from":"kp-missing"}`, 400, kmsgBadParameter},
			{"K6 no from", "POST", "/keypair/kp-to", `{}`, 422, "missing field `from`"},
			{"K6 no body", "POST", "/keypair/kp-to", nil, 400, kmsgNoBody},
			// K7
			{"K7 key handle", "DELETE", "/keypair", hb(f.sign), 400, kmsgNotKeyPair},
			{"K7 tampered", "DELETE", "/keypair", hb(tamperHandle(f.ec)), 400, kmsgInvalidHandle},
			// K8
			{"K8 algorithm", "POST", "/parameters/algorithm", hb(f.ec), 200, ""},
			{"K8 unknown name", "POST", "/parameters/rsa-p", hb(f.rsa), 400, kmsgBadParameter},
			{"K8 ec-point of RSA", "POST", "/parameters/ec-point", hb(f.rsa), 400, kmsgBadParameter},
			{"K8 rsa-exponent of EC", "POST", "/parameters/rsa-exponent", hb(f.preEC), 400, kmsgBadParameter},
			{"K8 symmetric key", "POST", "/parameters/algorithm", hb(f.sign), 400, kmsgNotKeyPair},
			{"K8 tampered", "POST", "/parameters/algorithm", hb(tamperHandle(f.ec)), 400, kmsgInvalidHandle},
			// K9
			{"K9 derive from a key pair", "POST", "/derivedkey", map[string]any{"baseKeyHandle": f.ec, "derivationData": "AQ=="}, 200, ""},
			{"K9 nested", "POST", "/derivedkey", map[string]any{"baseKeyHandle": f.derived, "derivationData": "AQ=="}, 400, kmsgNested},
			{"K9 tampered base", "POST", "/derivedkey", map[string]any{"baseKeyHandle": tamperHandle(f.sign), "derivationData": "AQ=="}, 400, kmsgInvalidHandle},
			{"K9 no derivationData", "POST", "/derivedkey", map[string]any{"baseKeyHandle": f.sign}, 422, "missing field `derivationData`"},
			{"K9 derivationData too long for a handle", "POST", "/derivedkey", map[string]any{"baseKeyHandle": f.sign, "derivationData": bytes.Repeat([]byte{0xFF}, 16<<10)}, 400,
				"parameter \"derivationData\" has an invalid value\ncaused by: the key handle would be too long"},
			// K10
			{"K10 export", "POST", "/derivedkey/export", hb(f.derived), 200, ""},
			{"K10 key", "POST", "/derivedkey/export", hb(f.sign), 400, kmsgNotDerived},
			{"K10 key pair", "POST", "/derivedkey/export", hb(f.ec), 400, kmsgNotDerived},
			{"K10 tampered", "POST", "/derivedkey/export", hb(tamperHandle(f.derived)), 400, kmsgInvalidHandle},
			// K11
			{"K11 ECDSA", "POST", "/sign", signB(f.ec, "ECDSA", digest), 200, ""},
			{"K11 HMAC key", "POST", "/sign", signB(f.sign, "HMAC-SHA256", []byte("m")), 200, ""},
			{"K11 HMAC derived", "POST", "/sign", signB(f.derived, "HMAC-SHA256", []byte("m")), 200, ""},
			{"K11 ECDSA with a key", "POST", "/sign", signB(f.sign, "ECDSA", digest), 400, kmsgMechanism},
			{"K11 ECDSA with a derived key", "POST", "/sign", signB(f.derived, "ECDSA", digest), 400, kmsgMechanism},
			{"K11 HMAC with a key pair", "POST", "/sign", signB(f.ec, "HMAC-SHA256", []byte("m")), 400, kmsgMechanism},
			{"K11 ECDSA with an RSA key", "POST", "/sign", signB(f.rsa, "ECDSA", digest), 400, kmsgBadParameter},
			{"K11 unknown algorithm", "POST", "/sign", `{"keyHandle":"x","algorithm":"RSA-PSS","parameters":{}}`, 422, "unknown variant `RSA-PSS`, expected one of `ECDSA`, `HMAC-SHA256`"},
			{"K11 no parameters", "POST", "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "ECDSA"}, 422, "missing field `parameters`"},
			{"K11 tampered", "POST", "/sign", signB(tamperHandle(f.ec), "ECDSA", digest), 400, kmsgInvalidHandle},
			{"K11 forged nested derived handle", "POST", "/sign", signB(f.forgedNested(), "HMAC-SHA256", []byte("m")), 400, kmsgInvalidHandle},
			// K12
			{"K12 AEAD key", "POST", "/encrypt", cryptB(f.enc, "AEAD", "plaintext", []byte("p")), 200, ""},
			{"K12 AEAD derived", "POST", "/encrypt", cryptB(f.derivedEnc, "AEAD", "plaintext", []byte("p")), 200, ""},
			{"K12 RSA-PKCS1", "POST", "/encrypt", cryptB(f.rsa, "RSA-PKCS1", "plaintext", digest), 200, ""},
			{"K12 RSA-NO-PADDING", "POST", "/encrypt", cryptB(f.preRSA, "RSA-NO-PADDING", "plaintext", append([]byte{0}, bytes.Repeat([]byte{1}, 255)...)), 200, ""},
			{"K12 RSA-NO-PADDING, above the modulus", "POST", "/encrypt", cryptB(f.preRSA, "RSA-NO-PADDING", "plaintext", bytes.Repeat([]byte{0xff}, 256)), 400, kmsgBadParameter},
			{"K12 RSA with parameters", "POST", "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-PKCS1", "parameters": aead, "plaintext": "AA=="}, 422, ""},
			{"K12 RSA with a key", "POST", "/encrypt", cryptB(f.enc, "RSA-PKCS1", "plaintext", digest), 400, kmsgMechanism},
			{"K12 RSA with an EC key", "POST", "/encrypt", cryptB(f.ec, "RSA-PKCS1", "plaintext", digest), 400, kmsgBadParameter},
			{"K12 AEAD with a key pair", "POST", "/encrypt", cryptB(f.rsa, "AEAD", "plaintext", digest), 400, kmsgMechanism},
			{"K12 no plaintext", "POST", "/encrypt", map[string]any{"keyHandle": f.enc, "algorithm": "AEAD", "parameters": aead}, 422, "missing field `plaintext`"},
			{"K12 unknown algorithm", "POST", "/encrypt", map[string]any{"keyHandle": f.enc, "algorithm": "AES-CBC", "plaintext": "AA=="}, 422, ""},
			// K13
			{"K13 RSA", "POST", "/decrypt", cryptB(f.rsa, "RSA-PKCS1", "ciphertext", digest), 400, kmsgMechanism},
			{"K13 forged ciphertext", "POST", "/decrypt", cryptB(f.enc, "AEAD", "ciphertext", append([]byte{2}, make([]byte, 20)...)), 400, kmsgBadParameter},
			{"K13 unknown version", "POST", "/decrypt", cryptB(f.enc, "AEAD", "ciphertext", append([]byte{9}, make([]byte, 20)...)), 400, kmsgBadParameter},
			{"K13 tampered handle", "POST", "/decrypt", cryptB(tamperHandle(f.enc), "AEAD", "ciphertext", []byte{2}), 400, kmsgInvalidHandle},
			{"K13 no ciphertext", "POST", "/decrypt", map[string]any{"keyHandle": f.enc, "algorithm": "AEAD", "parameters": aead}, 422, "missing field `ciphertext`"},
		}
		if b.name == "file" {
			// A genuine nested derived handle, MACed with the file store's
			// handle-validation key (as an old aziot keyd could have issued
			// one): keyd refuses to use it (aziot PR #667).
			nested := f.nestedHandle(t)
			cases = append(cases,
				keydCase{"K9 nested base", "POST", "/derivedkey", map[string]any{"baseKeyHandle": nested, "derivationData": "AQ=="}, 400, kmsgNested},
				keydCase{"K10 nested", "POST", "/derivedkey/export", hb(nested), 400, kmsgNested},
				keydCase{"K11 nested", "POST", "/sign", signB(nested, "HMAC-SHA256", []byte("m")), 400, kmsgNested},
				keydCase{"K12 nested", "POST", "/encrypt", cryptB(nested, "AEAD", "plaintext", []byte("p")), 400, kmsgNested},
			)
		}
		for _, fc := range []struct {
			name, method, ctype, body string
			status                    int
			msg                       string
		}{
			// A body aziot ignores, hence "missing request body".
			{"POST text/plain", "POST", "text/plain", `{"keyId":"k-x","usage":"sign"}`, 400, kmsgNoBody},
			{"PUT text/plain", "PUT", "text/plain", `{}`, 415, "request body must be application/json"},
			{"PUT empty JSON body", "PUT", "application/json", "", 422, ""},
		} {
			r := f.request(fc.method, "/key", nil, map[string]string{"Content-Type": fc.ctype})
			r.Body = fc.body
			if got := f.record(do(t, r)); got.Status != fc.status || (fc.msg != "" && got.message() != fc.msg) {
				t.Errorf("%s: %d %s, want %d %q", fc.name, got.Status, got.Body, fc.status, fc.msg)
			}
		}
		if r := f.record(do(t, request{Socket: f.d.socket("keyd"), Method: "GET", Target: "/keypair/kp-ec"})); r.Status != 400 || r.message() != "api-version not specified" {
			t.Errorf("no api-version: %d %s", r.Status, r.Body)
		}
		// Raw RSA on input shorter than the modulus: the file store refuses
		// it (RSA_private_encrypt), a token zero-pads it (CKM_RSA_X509), as
		// with aziot's two backends.
		short := keydCase{"K12 RSA-NO-PADDING, short input", "POST", "/encrypt", cryptB(f.rsa, "RSA-NO-PADDING", "plaintext", digest), 400, kmsgBadParameter}
		if b.name == "softhsm" {
			short.status, short.msg = 200, ""
		}
		runKeydCases(t, f.keydConn, 0, append(cases, short))
	})
}

// forgedNested is a nested derived handle with a wrong MAC.
func (f *keydFixture) forgedNested() string {
	sr := `{"key_id":{"Derived":["` + f.derived + `",[1]]},"nonce":"AA=="}`
	return "sr=" + base64.StdEncoding.EncodeToString([]byte(sr)) + "&sig=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
}

// nestedHandle is a derived handle whose base is itself derived, MACed with
// the handle-validation key read from the file store, byte for byte as
// aziot keyd serialises SR_JSON. keyd never issues one.
func (f *keydFixture) nestedHandle(t *testing.T) string {
	t.Helper()
	if f.nested != "" {
		return f.nested
	}
	path := filepath.Join(f.d.dir, "state", "keys", "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba.key")
	key, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("handle-validation key: %v", err)
	}
	nonce := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))
	base, _ := json.Marshal(f.derived)
	base = bytes.ReplaceAll(base, []byte(`\u0026`), []byte("&"))
	sr := `{"key_id":{"Derived":[` + string(base) + `,[1,2,3]]},"nonce":"` + nonce + `"}`
	f.nested = "sr=" + base64.StdEncoding.EncodeToString([]byte(sr)) + "&sig=" + base64.StdEncoding.EncodeToString(goHMAC(key, []byte(sr)))
	return f.nested
}
