package keyd

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestBodies: the hand-built request bodies are the JSON keyd expects.
func TestBodies(t *testing.T) {
	data := []byte{0, 1, 2, 0xff}
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"sign ECDSA", signBody("sr=a+b/c==&sig=x", ECDSA, data), `{"keyHandle":"sr=a+b/c==\u0026sig=x","algorithm":"ECDSA","parameters":{"digest":"AAEC/w=="}}`},
		{"sign HMAC, odd handle", signBody("q\"\\\n\u00e9", HMACSHA256, nil), `{"keyHandle":"q\"\\\n\u00e9","algorithm":"HMAC-SHA256","parameters":{"message":""}}`},
		{"encrypt AEAD", cryptBody("h", Mechanism{Algorithm: AEAD, IV: data}, "plaintext", data), `{"keyHandle":"h","algorithm":"AEAD","parameters":{"iv":"AAEC/w==","aad":""},"plaintext":"AAEC/w=="}`},
		{"encrypt RSA", cryptBody("h", Mechanism{Algorithm: RSAPKCS1}, "plaintext", data), `{"keyHandle":"h","algorithm":"RSA-PKCS1","plaintext":"AAEC/w=="}`},
		{"decrypt", cryptBody("h", Mechanism{Algorithm: AEAD}, "ciphertext", nil), `{"keyHandle":"h","algorithm":"AEAD","parameters":{"iv":"","aad":""},"ciphertext":""}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got, want any
			if err := json.Unmarshal(tc.body, &got); err != nil {
				t.Fatalf("invalid JSON %s: %v", tc.body, err)
			}
			json.Unmarshal([]byte(tc.want), &want)
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if !bytes.Equal(g, w) {
				t.Fatalf("body %s, want %s", tc.body, tc.want)
			}
		})
	}
}

func TestSingleField(t *testing.T) {
	cases := []struct {
		raw, name, want string
		ok              bool
	}{
		{`{"signature":"AAAA"}`, "signature", "AAAA", true},
		{`{"signature":""}`, "signature", "", true},
		{`{"signature": "AAAA"}`, "signature", "", false},
		{`{"sig":"AAAA"}`, "signature", "", false},
		{`{"signature":"A\"A"}`, "signature", "", false},
		{`{"a":"b","signature":"x"}`, "signature", "", false},
		{`{"`, "signature", "", false},
	}
	for _, tc := range cases {
		v, ok := singleField([]byte(tc.raw), tc.name)
		if string(v) != tc.want || ok != tc.ok {
			t.Errorf("singleField(%s) = %q %v, want %q %v", tc.raw, v, ok, tc.want, tc.ok)
		}
	}
}
