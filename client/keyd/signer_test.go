package keyd

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// fakeKeyd serves the routes Signer uses for one key pair, with the private
// key in the test: enough to check the client's encodings against Go's
// verifiers. The conformance suite checks the real keyd.
func fakeKeyd(t *testing.T, priv crypto.Signer) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "keyd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /parameters/{name}", func(w http.ResponseWriter, r *http.Request) {
		var v string
		switch k := priv.(type) {
		case *ecdsa.PrivateKey:
			oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
			v = map[string]string{
				"algorithm":    "ECDSA",
				"ec-curve-oid": b64(oid),
				"ec-point":     b64(elliptic.MarshalCompressed(k.Curve, k.X, k.Y)),
			}[r.PathValue("name")]
		case *rsa.PrivateKey:
			v = map[string]string{
				"algorithm":    "RSA",
				"rsa-modulus":  b64(k.N.Bytes()),
				"rsa-exponent": b64(big.NewInt(int64(k.E)).Bytes()),
			}[r.PathValue("name")]
		}
		if v == "" {
			w.WriteHeader(400)
			reply(w, map[string]string{"message": "a parameter has an invalid value"})
			return
		}
		reply(w, map[string]string{"value": v})
	})
	mux.HandleFunc("POST /sign", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Algorithm  string
			Parameters struct{ Digest []byte }
		}
		json.NewDecoder(r.Body).Decode(&req)
		sig, err := ecdsa.SignASN1(rand.Reader, priv.(*ecdsa.PrivateKey), req.Parameters.Digest)
		if err != nil || req.Algorithm != "ECDSA" {
			w.WriteHeader(400)
			return
		}
		reply(w, map[string][]byte{"signature": sig})
	})
	mux.HandleFunc("POST /encrypt", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Algorithm  string
			Parameters json.RawMessage
			Plaintext  []byte
		}
		json.NewDecoder(r.Body).Decode(&req)
		k := priv.(*rsa.PrivateKey)
		var out []byte
		var err error
		switch {
		case req.Parameters != nil:
			w.WriteHeader(422)
			return
		case req.Algorithm == RSAPKCS1:
			out, err = rsa.SignPKCS1v15(nil, k, 0, req.Plaintext)
		case req.Algorithm == RSANoPadding && len(req.Plaintext) == k.Size():
			out = new(big.Int).Exp(new(big.Int).SetBytes(req.Plaintext), k.D, k.N).FillBytes(make([]byte, k.Size()))
		default:
			w.WriteHeader(400)
			return
		}
		if err != nil {
			w.WriteHeader(500)
			return
		}
		reply(w, map[string][]byte{"ciphertext": out})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := New(sock)
	t.Cleanup(c.Close)
	return c
}

func TestSigner(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa3072, _ := rsa.GenerateKey(rand.Reader, 3072)
	msg := []byte("the message")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	cases := []struct {
		name   string
		key    crypto.Signer
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"ecdsa p256 sha256", ecKey, d256[:], crypto.SHA256},
		{"rsa pkcs1 sha256", rsaKey, d256[:], crypto.SHA256},
		{"rsa pkcs1 sha384", rsaKey, d384[:], crypto.SHA384},
		{"rsa pss equals hash (TLS 1.3)", rsaKey, d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"rsa pss auto salt", rsaKey, d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}},
		{"rsa pss sha384 salt 20", rsaKey, d384[:], &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA384}},
		{"rsa-3072 pss", rsa3072, d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeKeyd(t, tc.key)
			s, err := c.Signer(context.Background(), "handle")
			if err != nil {
				t.Fatal(err)
			}
			sig, err := s.Sign(rand.Reader, tc.digest, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				if !pub.Equal(tc.key.Public()) || !ecdsa.VerifyASN1(pub, tc.digest, sig) {
					t.Fatal("ECDSA signature does not verify with the rebuilt public key")
				}
			case *rsa.PublicKey:
				if !pub.Equal(tc.key.Public()) {
					t.Fatal("rebuilt RSA public key differs")
				}
				if pss, ok := tc.opts.(*rsa.PSSOptions); ok {
					err = rsa.VerifyPSS(pub, pss.Hash, tc.digest, sig, pss)
				} else {
					err = rsa.VerifyPKCS1v15(pub, tc.opts.HashFunc(), tc.digest, sig)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestSignerErrors(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	c := fakeKeyd(t, rsaKey)
	s, err := c.Signer(context.Background(), "h")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
		want   string
	}{
		{"digest length", make([]byte, 31), crypto.SHA256, "digest is 31 bytes"},
		{"unsupported hash", make([]byte, 16), crypto.MD5, "unsupported hash"},
		{"pss digest length", make([]byte, 20), &rsa.PSSOptions{Hash: crypto.SHA256}, "digest is 20 bytes"},
		{"pss salt too long", make([]byte, 32), &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 300}, "cannot hold"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Sign(rand.Reader, tc.digest, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := c.Parameter(context.Background(), "h", "ec-point"); err == nil || !strings.Contains(err.Error(), "a parameter has an invalid value") {
		t.Fatalf("Parameter error = %v", err)
	}
}

func TestPublicKeyDecoding(t *testing.T) {
	oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	unknown, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 3})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name       string
		oid, point []byte
		ok         bool
	}{
		{"compressed", oid, elliptic.MarshalCompressed(k.Curve, k.X, k.Y), true},
		{"uncompressed", oid, elliptic.Marshal(k.Curve, k.X, k.Y), true},
		{"x not a field element", oid, append([]byte{2}, bytes.Repeat([]byte{0xff}, 32)...), false},
		{"wrong length", oid, []byte{2, 1, 2}, false},
		{"unknown curve", unknown, elliptic.MarshalCompressed(k.Curve, k.X, k.Y), false},
		{"not DER", []byte{1, 2, 3}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := ecPublicKey(tc.oid, tc.point)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !pub.Equal(&k.PublicKey) {
				t.Fatal("wrong key")
			}
		})
	}
	if _, err := rsaPublicKey(make([]byte, 64), []byte{1, 0, 1}); err == nil {
		t.Fatal("512-bit modulus accepted")
	}
	if _, err := rsaPublicKey(append([]byte{0x80}, make([]byte, 255)...), []byte{1}); err == nil {
		t.Fatal("exponent 1 accepted")
	}
}
