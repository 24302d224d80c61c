package keyd

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"

	"github.com/warden-iot/warden/capabilities"
)

// handles of the handle-route tests.
type fixture struct {
	e                      *env
	key, derived, nested   string
	ec, rsa, otherKey      string
	keyBytes, derivationID []byte
}

func newFixture(t *testing.T) *fixture {
	e := newEnv(t)
	f := &fixture{e: e, keyBytes: bytes.Repeat([]byte{0x42}, 32), derivationID: []byte("module-1:gen:primary")}
	f.key = e.importKey("a-key", f.keyBytes)
	f.otherKey = e.importKey("b-key", bytes.Repeat([]byte{0x43}, 32))
	f.ec = e.keyPair("a-ec", "ec-p256")
	f.rsa = e.keyPair("a-rsa", "rsa-2048")
	f.derived = e.handle(e.post("/derivedkey", map[string]any{"baseKeyHandle": f.key, "derivationData": f.derivationID}))
	return f
}

func tamper(h string) string {
	i := strings.Index(h, "&sig=") + len("&sig=")
	c := byte('A')
	if h[i] == 'A' {
		c = 'B'
	}
	return h[:i] + string(c) + h[i+1:]
}

func TestHandleRoutesErrors(t *testing.T) {
	f := newFixture(t)
	e := f.e
	digest := sha256.Sum256([]byte("x"))
	aead := map[string]any{"iv": make([]byte, 12), "aad": []byte("aad")}
	cases := []struct {
		name   string
		target string
		body   any
		want   check
	}{
		{"parameters, unknown name", "/parameters/rsa-prime", map[string]string{"keyHandle": f.rsa}, check{400, msgBadParameter}},
		{"parameters, ec-point of an RSA key", "/parameters/ec-point", map[string]string{"keyHandle": f.rsa}, check{400, msgBadParameter}},
		{"parameters, rsa-modulus of an EC key", "/parameters/rsa-modulus", map[string]string{"keyHandle": f.ec}, check{400, msgBadParameter}},
		{"parameters of a symmetric key", "/parameters/algorithm", map[string]string{"keyHandle": f.key}, check{400, msgNotKeyPair}},
		{"parameters, tampered handle", "/parameters/algorithm", map[string]string{"keyHandle": tamper(f.ec)}, check{400, msgInvalidHandle}},
		{"parameters, no body", "/parameters/algorithm", "", check{400, "missing request body"}},
		{"derive from a derived key", "/derivedkey", map[string]any{"baseKeyHandle": f.derived, "derivationData": "AA=="}, check{400, msgNested}},
		{"derive, tampered base", "/derivedkey", map[string]any{"baseKeyHandle": tamper(f.key), "derivationData": "AA=="}, check{400, msgInvalidHandle}},
		{"derive, no data", "/derivedkey", map[string]any{"baseKeyHandle": f.key}, check{422, "missing field `derivationData`"}},
		{"derive, data not base64", "/derivedkey", map[string]any{"baseKeyHandle": f.key, "derivationData": "%%"}, check{422, ""}},
		{"export a key", "/derivedkey/export", map[string]string{"keyHandle": f.key}, check{400, msgNotDerived}},
		{"export a key pair", "/derivedkey/export", map[string]string{"keyHandle": f.ec}, check{400, msgNotDerived}},
		{"export, tampered", "/derivedkey/export", map[string]string{"keyHandle": tamper(f.derived)}, check{400, msgInvalidHandle}},
		{"sign ECDSA with a key", "/sign", map[string]any{"keyHandle": f.key, "algorithm": "ECDSA", "parameters": map[string]any{"digest": digest[:]}}, check{400, msgMechanism}},
		{"sign ECDSA with a derived key", "/sign", map[string]any{"keyHandle": f.derived, "algorithm": "ECDSA", "parameters": map[string]any{"digest": digest[:]}}, check{400, msgMechanism}},
		{"sign HMAC with a key pair", "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "AA=="}}, check{400, msgMechanism}},
		{"sign ECDSA with an RSA key", "/sign", map[string]any{"keyHandle": f.rsa, "algorithm": "ECDSA", "parameters": map[string]any{"digest": digest[:]}}, check{400, msgBadParameter}},
		{"sign, unknown algorithm", "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "RSA-PSS", "parameters": map[string]any{"digest": digest[:]}}, check{422, "unknown variant `RSA-PSS`, expected one of `ECDSA`, `HMAC-SHA256`"}},
		{"sign, no parameters", "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "ECDSA"}, check{422, "missing field `parameters`"}},
		{"sign, digest under message", "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "ECDSA", "parameters": map[string]any{"message": "AA=="}}, check{422, "missing field `digest`"}},
		{"sign, tampered handle", "/sign", map[string]any{"keyHandle": tamper(f.ec), "algorithm": "ECDSA", "parameters": map[string]any{"digest": digest[:]}}, check{400, msgInvalidHandle}},
		{"sign, not a handle", "/sign", map[string]any{"keyHandle": "hello", "algorithm": "ECDSA", "parameters": map[string]any{"digest": digest[:]}}, check{400, msgInvalidHandle}},
		{"encrypt AEAD with a key pair", "/encrypt", map[string]any{"keyHandle": f.ec, "algorithm": "AEAD", "parameters": aead, "plaintext": "AA=="}, check{400, msgMechanism}},
		{"encrypt RSA with a key", "/encrypt", map[string]any{"keyHandle": f.key, "algorithm": "RSA-PKCS1", "plaintext": "AA=="}, check{400, msgMechanism}},
		{"encrypt RSA with an EC key", "/encrypt", map[string]any{"keyHandle": f.ec, "algorithm": "RSA-PKCS1", "plaintext": "AA=="}, check{400, msgBadParameter}},
		{"encrypt RSA-NO-PADDING, short input", "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-NO-PADDING", "plaintext": "AA=="}, check{400, msgBadParameter}},
		{"encrypt RSA with parameters", "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-PKCS1", "parameters": aead, "plaintext": "AA=="}, check{422, ""}},
		{"encrypt RSA with null parameters", "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-PKCS1", "parameters": nil, "plaintext": "AA=="}, check{200, ""}},
		{"encrypt AEAD, no iv", "/encrypt", map[string]any{"keyHandle": f.key, "algorithm": "AEAD", "parameters": map[string]any{"aad": ""}, "plaintext": "AA=="}, check{422, "missing field `iv`"}},
		{"encrypt AEAD, empty iv", "/encrypt", map[string]any{"keyHandle": f.key, "algorithm": "AEAD", "parameters": map[string]any{"iv": "", "aad": ""}, "plaintext": "AA=="}, check{400, msgBadParameter}},
		{"encrypt, no plaintext", "/encrypt", map[string]any{"keyHandle": f.key, "algorithm": "AEAD", "parameters": aead}, check{422, "missing field `plaintext`"}},
		{"encrypt, unknown algorithm", "/encrypt", map[string]any{"keyHandle": f.key, "algorithm": "AES-CBC", "plaintext": "AA=="}, check{422, ""}},
		{"decrypt RSA", "/decrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-PKCS1", "ciphertext": "AA=="}, check{400, msgMechanism}},
		{"decrypt AEAD with a key pair", "/decrypt", map[string]any{"keyHandle": f.ec, "algorithm": "AEAD", "parameters": aead, "ciphertext": "AA=="}, check{400, msgMechanism}},
		{"decrypt garbage", "/decrypt", map[string]any{"keyHandle": f.key, "algorithm": "AEAD", "parameters": aead, "ciphertext": base64.StdEncoding.EncodeToString(make([]byte, 40))}, check{400, msgBadParameter}},
		{"decrypt, no ciphertext", "/decrypt", map[string]any{"keyHandle": f.key, "algorithm": "AEAD", "parameters": aead, "plaintext": "AA=="}, check{422, "missing field `ciphertext`"}},
		{"decrypt, tampered handle", "/decrypt", map[string]any{"keyHandle": tamper(f.key), "algorithm": "AEAD", "parameters": aead, "ciphertext": "AA=="}, check{400, msgInvalidHandle}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.body != "" {
				body = jsonBody(tc.body)
			}
			tc.want.verify(t, e.call(root, "", "POST", tc.target, body))
		})
	}
}

func TestHandleRoutesCrypto(t *testing.T) {
	f := newFixture(t)
	e := f.e
	post := func(t *testing.T, target string, body any) resp {
		t.Helper()
		r := e.post(target, body)
		check{200, ""}.verify(t, r)
		return r
	}
	ecPoint := post(t, "/parameters/ec-point", map[string]string{"keyHandle": f.ec}).bytes("value")
	x, y := elliptic.UnmarshalCompressed(elliptic.P256(), ecPoint)
	if len(ecPoint) != 33 || x == nil {
		t.Fatalf("ec-point %x is not a compressed P-256 point", ecPoint)
	}
	ecPub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
	oid := post(t, "/parameters/ec-curve-oid", map[string]string{"keyHandle": f.ec}).bytes("value")
	if want, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}); !bytes.Equal(oid, want) {
		t.Fatalf("ec-curve-oid %x, want %x", oid, want)
	}
	n := post(t, "/parameters/rsa-modulus", map[string]string{"keyHandle": f.rsa}).bytes("value")
	eb := post(t, "/parameters/rsa-exponent", map[string]string{"keyHandle": f.rsa}).bytes("value")
	if len(n) != 256 || !bytes.Equal(eb, []byte{1, 0, 1}) {
		t.Fatalf("rsa-modulus of %d bytes, rsa-exponent %x", len(n), eb)
	}
	rsaPub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}

	t.Run("ECDSA", func(t *testing.T) {
		d := sha256.Sum256([]byte("to be signed"))
		sig := post(t, "/sign", map[string]any{"keyHandle": f.ec, "algorithm": "ECDSA", "parameters": map[string]any{"digest": d[:]}}).bytes("signature")
		if !ecdsa.VerifyASN1(ecPub, d[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	})
	t.Run("HMAC with a derived key", func(t *testing.T) {
		msg := []byte("sas string to sign")
		derived := hmacSHA256(f.keyBytes, f.derivationID)
		sig := post(t, "/sign", map[string]any{"keyHandle": f.derived, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": msg}}).bytes("signature")
		if !bytes.Equal(sig, hmacSHA256(derived, msg)) {
			t.Fatal("derived HMAC differs from HMAC(HMAC(base, data), msg)")
		}
		exported := post(t, "/derivedkey/export", map[string]string{"keyHandle": f.derived}).bytes("key")
		if !bytes.Equal(exported, derived) {
			t.Fatal("exported derived key differs")
		}
	})
	t.Run("RSA-PKCS1", func(t *testing.T) {
		in := []byte("DigestInfo||digest stand-in")
		sig := post(t, "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-PKCS1", "plaintext": in}).bytes("ciphertext")
		if err := rsa.VerifyPKCS1v15(rsaPub, 0, in, sig); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("RSA-NO-PADDING", func(t *testing.T) {
		in := make([]byte, 256)
		in[1], in[255] = 0x42, 0x01
		out := post(t, "/encrypt", map[string]any{"keyHandle": f.rsa, "algorithm": "RSA-NO-PADDING", "plaintext": in}).bytes("ciphertext")
		back := new(big.Int).Exp(new(big.Int).SetBytes(out), big.NewInt(65537), rsaPub.N).FillBytes(make([]byte, 256))
		if len(out) != 256 || !bytes.Equal(back, in) {
			t.Fatal("raw RSA private operation is not the inverse of the public one")
		}
	})
	for _, h := range []struct{ name, handle string }{{"key", f.key}, {"derived", f.derived}} {
		t.Run("AEAD "+h.name, func(t *testing.T) {
			iv, aad, pt := []byte("123456789012"), []byte("aad"), []byte("secret module key")
			params := map[string]any{"iv": iv, "aad": aad}
			ct := post(t, "/encrypt", map[string]any{"keyHandle": h.handle, "algorithm": "AEAD", "parameters": params, "plaintext": pt}).bytes("ciphertext")
			key := f.keyBytes
			if h.name == "derived" {
				key = hmacSHA256(f.keyBytes, f.derivationID)
			}
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			if ct[0] != 0x02 {
				t.Fatalf("ciphertext version %d, want 2", ct[0])
			}
			if got, err := gcm.Open(nil, iv, ct[1:], aad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Go cannot open keyd's ciphertext: %v", err)
			}
			mine := append([]byte{0x02}, gcm.Seal(nil, iv, []byte("from Go"), aad)...)
			got := post(t, "/decrypt", map[string]any{"keyHandle": h.handle, "algorithm": "AEAD", "parameters": params, "ciphertext": mine}).bytes("plaintext")
			if string(got) != "from Go" {
				t.Fatalf("decrypt of Go's ciphertext: %q", got)
			}
			// IoT Edge 1.1's v1 framing: 0x01 || tag || ct.
			sealed := gcm.Seal(nil, iv, []byte("v1"), aad)
			v1 := append(append([]byte{0x01}, sealed[len(sealed)-16:]...), sealed[:len(sealed)-16]...)
			if got := post(t, "/decrypt", map[string]any{"keyHandle": h.handle, "algorithm": "AEAD", "parameters": params, "ciphertext": v1}).bytes("plaintext"); string(got) != "v1" {
				t.Fatalf("v1 ciphertext: %q", got)
			}
			bad := bytes.Clone(ct)
			bad[len(bad)-1] ^= 1
			check{400, msgBadParameter}.verify(t, e.post("/decrypt", map[string]any{"keyHandle": h.handle, "algorithm": "AEAD", "parameters": params, "ciphertext": bad}))
		})
	}
}

// TestHandleAuthorization: handle routes are open to every uid; a token
// confines its bearer to the keys it names, a derived handle counting as
// its base key.
func TestHandleAuthorization(t *testing.T) {
	f := newFixture(t)
	e := f.e
	tok := e.token(uidA, capabilities.Capability{Resource: "key:a-key", Ops: []string{"sign"}})
	sign := func(handle string) string {
		return jsonBody(map[string]any{"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "AA=="}})
	}
	cases := []struct {
		name string
		uid  uint32
		tok  string
		path string
		body string
		want check
	}{
		{"open to any uid", 4242, "", "/sign", sign(f.otherKey), check{200, ""}},
		{"parameters open to any uid", 4242, "", "/parameters/algorithm", jsonBody(map[string]string{"keyHandle": f.ec}), check{200, ""}},
		{"token covers its key", uidA, tok, "/sign", sign(f.key), check{200, ""}},
		{"token covers a key derived from its key", uidA, tok, "/sign", sign(f.derived), check{200, ""}},
		{"token refuses another key", uidA, tok, "/sign", sign(f.otherKey), check{401, "user 1000 is not authorized to access the key b-key"}},
		{"token refuses another operation", uidA, tok, "/derivedkey/export", jsonBody(map[string]string{"keyHandle": f.derived}), check{401, "user 1000 is not authorized to access the key a-key"}},
		{"token refuses an ID operation", uidA, tok, "/key", `{"keyId":"a-new","usage":"sign"}`, check{401, "user 1000 is not authorized to access the key a-new"}},
		{"token of another uid", 4242, tok, "/sign", sign(f.key), check{401, capabilities.ErrWrongUID.Error()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.verify(t, e.call(tc.uid, tc.tok, "POST", tc.path, tc.body))
		})
	}
}
