package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// TestIssuedCertificate: what an enrollment returns, and what the
// bootstrap flow stores as the EST identity, is the certificate issued for
// the CSR's key, first. A server that certifies another key is refused
// (est_response) and nothing is stored: a stored identity that does not
// match its key would break every later TLS handshake, and the bootstrap
// flow never runs again once the identity exists. A server that sends the
// CA before the issued certificate still gives a leaf-first chain.
func TestIssuedCertificate(t *testing.T) {
	csr, pub := newCSR(t, "device")
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bootstrap := estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, IdentityCertID: "est-id", IdentityKeyID: "est-id",
		BootstrapCertID: "boot", BootstrapKeyID: "boot"}

	t.Run("bootstrap, certificate for another key", func(t *testing.T) {
		s := newFakeServer(t)
		s.issueFor = other.Public()
		h := newFakeHost(t, s)
		h.certs["boot"] = "bootstrap cert"
		_, err := run(t, h, bootstrap)
		if code(err) != estjob.CodeResponse {
			t.Fatalf("err %v (code %q), want %s", err, code(err), estjob.CodeResponse)
		}
		if p, ok := h.certs["est-id"]; ok {
			t.Fatalf("a certificate for another key was stored as the EST identity:\n%s", p)
		}
	})
	t.Run("enroll, certificate for another key", func(t *testing.T) {
		s := newFakeServer(t)
		s.issueFor = other.Public()
		_, err := run(t, newFakeHost(t, s), estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr})
		if code(err) != estjob.CodeResponse {
			t.Fatalf("err %v (code %q), want %s", err, code(err), estjob.CodeResponse)
		}
	})
	t.Run("bootstrap, CA before the issued certificate", func(t *testing.T) {
		s := newFakeServer(t)
		s.caFirst = true
		h := newFakeHost(t, s)
		h.certs["boot"] = "bootstrap cert"
		res, err := run(t, h, bootstrap)
		if err != nil {
			t.Fatal(err)
		}
		id, err := x509.ParseCertificate(mustPEM(t, h.certs["est-id"]))
		if err != nil || !id.PublicKey.(*ecdsa.PublicKey).Equal(h.keys["est-id"].Public()) {
			t.Fatalf("the stored identity chain does not start with the identity's certificate: %v %v", id.Subject, err)
		}
		leaf, err := x509.ParseCertificate(res.Certs[0])
		if err != nil || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(pub) || len(res.Certs) != 2 {
			t.Fatalf("result certs[0] %v (%d certs) is not the CSR's certificate: %v", leaf.Subject, len(res.Certs), err)
		}
	})
}
