package pkcs7

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCerts returns n self-signed certificates (DER).
func testCerts(t testing.TB, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := 0; i < n; i++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "c"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	return out
}

// certsOnly builds a degenerate SignedData holding certs, as RFC 7030's
// Simple PKI Response, with encoding/asn1 (independent of the parser).
func certsOnly(t testing.TB, certs [][]byte, withCRLs bool) []byte {
	t.Helper()
	type encap struct {
		Type asn1.ObjectIdentifier
	}
	var certSet []byte
	for _, c := range certs {
		certSet = append(certSet, c...)
	}
	sd := struct {
		Version    int
		Digests    asn1.RawValue
		Encap      encap
		Certs      asn1.RawValue `asn1:"optional,tag:0"`
		CRLs       asn1.RawValue `asn1:"optional,tag:1"`
		SignerInfo asn1.RawValue
	}{
		Version:    1,
		Digests:    asn1.RawValue{Class: 0, Tag: 17, IsCompound: true},
		Encap:      encap{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}},
		SignerInfo: asn1.RawValue{Class: 0, Tag: 17, IsCompound: true},
	}
	if certs != nil {
		sd.Certs = asn1.RawValue{Class: 2, Tag: 0, IsCompound: true, Bytes: certSet}
	}
	if withCRLs {
		sd.CRLs = asn1.RawValue{Class: 2, Tag: 1, IsCompound: true}
	}
	sdDER, err := asn1.Marshal(sd)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		Type    asn1.ObjectIdentifier
		Content asn1.RawValue
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}, asn1.RawValue{Class: 2, Tag: 0, IsCompound: true, Bytes: sdDER}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func wrap(s string, width int, eol string) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + eol)
		s = s[width:]
	}
	b.WriteString(s + eol)
	return b.String()
}

func TestCertificates(t *testing.T) {
	certs := testCerts(t, 3)
	cases := []struct {
		name    string
		der     []byte
		want    int
		wantErr error
	}{
		{"three", certsOnly(t, certs, false), 3, nil},
		{"one with empty crls", certsOnly(t, certs[:1], true), 1, nil},
		{"no certificates", certsOnly(t, nil, false), 0, nil},
		{"data, not signedData", bytes.Replace(certsOnly(t, certs[:1], false), oidSignedData, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}, 1), 0, ErrNotSignedData},
		{"truncated", certsOnly(t, certs[:1], false)[:100], 0, ErrMalformed},
		{"trailing bytes", append(certsOnly(t, certs[:1], false), 0), 0, ErrMalformed},
		{"empty", nil, 0, ErrMalformed},
		{"indefinite length", []byte{0x30, 0x80, 0, 0}, 0, ErrMalformed},
		{"overlong length", []byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff}, 0, ErrMalformed},
		{"non-minimal length", []byte{0x30, 0x81, 0x01, 0x00}, 0, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Certificates(tc.der)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if len(got) != tc.want {
				t.Fatalf("%d certificates, want %d", len(got), tc.want)
			}
			for i, c := range got {
				if !bytes.Equal(c, certs[i]) {
					t.Fatalf("certificate %d differs", i)
				}
			}
		})
	}
}

// TestParseResponseEncodings: every body form EST servers send: base64
// wrapped at 76 with CRLF (GlobalSign), at 64 with LF, unwrapped, without
// padding, PEM, and raw DER.
func TestParseResponseEncodings(t *testing.T) {
	certs := testCerts(t, 2)
	der := certsOnly(t, certs, false)
	b64 := base64.StdEncoding.EncodeToString(der)
	bodies := map[string]string{
		"76 CRLF":    wrap(b64, 76, "\r\n"),
		"64 LF":      wrap(b64, 64, "\n"),
		"unwrapped":  b64,
		"no padding": strings.TrimRight(b64, "="),
		"spaces":     " " + wrap(b64, 10, " \t") + " ",
		"PEM":        string(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der})),
		"raw DER":    string(der),
	}
	for name, body := range bodies {
		got, err := ParseResponse([]byte(body))
		if err != nil || len(got) != 2 || !bytes.Equal(got[1], certs[1]) {
			t.Errorf("%s: %d certs, %v", name, len(got), err)
		}
	}
	if _, err := ParseResponse([]byte("!!not base64!!")); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v", err)
	}
}

// TestOpenSSLCertsOnly parses what openssl crl2pkcs7 -nocrl writes.
func TestOpenSSLCertsOnly(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("no openssl")
	}
	certs := testCerts(t, 2)
	dir := t.TempDir()
	var chain []byte
	for _, c := range certs {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	in := filepath.Join(dir, "chain.pem")
	os.WriteFile(in, chain, 0o644)
	out, err := exec.Command("openssl", "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", "DER").Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Certificates(out)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], certs[0]) {
		t.Fatalf("%d certs, %v", len(got), err)
	}
}

// FuzzParseResponse: the parser never panics, returns certificates only as
// complete SEQUENCE elements inside the input's DER, and every error wraps
// one of the package's sentinels.
func FuzzParseResponse(f *testing.F) {
	certs := testCerts(f, 2)
	der := certsOnly(f, certs, true)
	f.Add(der)
	f.Add([]byte(base64.StdEncoding.EncodeToString(der)))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der}))
	f.Add(certsOnly(f, nil, false))
	f.Add([]byte{0x30, 0x80})
	f.Add([]byte("MIIB"))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ParseResponse(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotSignedData) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		dec, _ := Decode(body)
		for _, c := range got {
			if len(c) < 2 || c[0] != tagSequence || !bytes.Contains(dec, c) {
				t.Fatalf("certificate %x is not an element of the input", c)
			}
		}
	})
}
