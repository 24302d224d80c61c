package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/globalsign/est"
)

// testCA is the harness's CA behind the library's server. It issues
// certificates that copy the CSR's subject and SAN for a configurable
// lifetime, and enforces per-label rules (see labelRules):
//
//   - a label containing "tls" needs a TLS client certificate that the
//     server verified (a bootstrap certificate or one this CA issued);
//   - a label containing "defer" answers the first request for each CSR key
//     with 202 and Retry-After, and issues on the next;
//   - the label "triggererrors" behaves as the library's mock CA
//     (CN "Trigger Error Deferred" is 202 + Retry-After: 600, "…Forbidden"
//     403, "…Unknown" 500).
type testCA struct {
	cert       *x509.Certificate
	key        crypto.Signer
	lifetime   time.Duration
	retryAfter int

	mu       sync.Mutex
	deferred map[[32]byte]bool // CSR keys answered with 202 once
	issued   int
}

// caError is an est.Error: status, text and Retry-After.
type caError struct {
	status     int
	desc       string
	retryAfter int
}

// StatusCode, Error and RetryAfter implement est.Error.
func (e caError) StatusCode() int { return e.status }
func (e caError) Error() string   { return e.desc }
func (e caError) RetryAfter() int { return e.retryAfter }

var _ est.Error = caError{}

// loadOrCreateCA reads ca.pem and ca.key from dir, or creates a P-256 root
// valid ten years and writes them there (so a restarted server keeps its CA).
func loadOrCreateCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if c, err := os.ReadFile(certPath); err == nil {
		k, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, nil, err
		}
		return parseCertAndKey(c, k)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Warden test EST CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func parseCertAndKey(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("ca.pem or ca.key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("CA key is a %T", k)
	}
	return cert, s, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// keyID is the RFC 5280 method-1 key identifier (SHA-1 of the public key bits).
func keyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	var spki struct {
		Alg asn1.RawValue
		Key asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.Key.Bytes)
	return sum[:]
}

// issue signs a certificate for pub with subject and SAN taken from csr.
func (ca *testCA) issue(csr *x509.CertificateRequest, usages []x509.ExtKeyUsage, dns []string, ips []string) (*x509.Certificate, error) {
	now := time.Now()
	notAfter := now.Add(ca.lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             now.Add(-time.Second),
		NotAfter:              notAfter,
		RawSubject:            csr.RawSubject,
		SubjectKeyId:          keyID(csr.PublicKey),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		DNSNames:              dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, parseIP(ip))
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// CACerts returns the CA certificate.
func (ca *testCA) CACerts(_ context.Context, aps string, _ *http.Request) ([]*x509.Certificate, error) {
	return []*x509.Certificate{ca.cert}, nil
}

// CSRAttrs offers no attributes.
func (ca *testCA) CSRAttrs(context.Context, string, *http.Request) (est.CSRAttrs, error) {
	return est.CSRAttrs{}, nil
}

// Enroll applies the label's rules, then issues.
func (ca *testCA) Enroll(ctx context.Context, csr *x509.CertificateRequest, aps string, r *http.Request) (*x509.Certificate, error) {
	if aps == "triggererrors" {
		switch csr.Subject.CommonName {
		case "Trigger Error Forbidden":
			return nil, caError{status: http.StatusForbidden, desc: "triggered forbidden response"}
		case "Trigger Error Deferred":
			return nil, caError{status: http.StatusAccepted, desc: "triggered deferred response", retryAfter: 600}
		case "Trigger Error Unknown":
			return nil, errors.New("triggered error")
		}
	}
	if strings.Contains(aps, "tls") && (r == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		return nil, caError{status: http.StatusForbidden, desc: "a verified TLS client certificate is required"}
	}
	if strings.Contains(aps, "defer") {
		der, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
		if err != nil {
			return nil, caError{status: http.StatusBadRequest, desc: "bad public key"}
		}
		k := sha256.Sum256(der)
		ca.mu.Lock()
		seen := ca.deferred[k]
		ca.deferred[k] = true
		ca.mu.Unlock()
		if !seen {
			return nil, caError{status: http.StatusAccepted, desc: "deferred, retry later", retryAfter: ca.retryAfter}
		}
	}
	cert, err := ca.issue(csr, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, nil, nil)
	if err == nil {
		ca.mu.Lock()
		ca.issued++
		n := ca.issued
		ca.mu.Unlock()
		if l := est.LoggerFromContext(ctx); l != nil {
			l.Infof("issued certificate %d: subject %q serial %x until %s", n, cert.Subject, cert.SerialNumber, cert.NotAfter.Format(time.RFC3339))
		}
	}
	return cert, err
}

// Reenroll is Enroll (the library already checked that the TLS client
// certificate matches the CSR's subject and was issued by this CA).
func (ca *testCA) Reenroll(ctx context.Context, _ *x509.Certificate, csr *x509.CertificateRequest, aps string, r *http.Request) (*x509.Certificate, error) {
	return ca.Enroll(ctx, csr, aps, r)
}

// ServerKeyGen is not offered.
func (ca *testCA) ServerKeyGen(context.Context, *x509.CertificateRequest, string, *http.Request) (*x509.Certificate, []byte, error) {
	return nil, nil, caError{status: http.StatusNotImplemented, desc: "serverkeygen is not offered"}
}

// TPMEnroll is not offered.
func (ca *testCA) TPMEnroll(context.Context, *x509.CertificateRequest, []*x509.Certificate, []byte, []byte, string, *http.Request) ([]byte, []byte, []byte, error) {
	return nil, nil, nil, caError{status: http.StatusNotImplemented, desc: "tpmenroll is not offered"}
}
