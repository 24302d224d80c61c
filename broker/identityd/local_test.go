package identityd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
)

// TestLocalIdentityExpiration: a local identity's expiration is the
// certificate's notAfter in aziot's RFC 3339 form (chrono's to_rfc3339:
// "+00:00", not "Z"), as aziot-api.md §6.2 shows it.
func TestLocalIdentityExpiration(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	notAfter := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	issue := func(_ context.Context, _ string, csrPEM []byte) ([]byte, error) {
		b, _ := pem.Decode(csrPEM)
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: csr.Subject,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter}, &x509.Certificate{Subject: pkix.Name{CommonName: "ca"}},
			csr.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
	}
	cfg := &config.Config{Hostname: "host", LocalID: &config.LocalID{Domain: "example.com"}}
	s, err := New(nil, cfg, Options{Issue: issue, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.CreateLocal(context.Background(), "adhoc", false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.Spec.Auth.Expiration, "2031-05-01T12:00:00+00:00"; got != want {
		t.Fatalf("expiration %q, want %q", got, want)
	}
}

// TestLocalIdentityIssueFailure: when certd cannot issue the local
// identity's certificate (here: no [cert_issuance.<module>], certd's 400
// on "issuer"), identityd answers its own 500 "internal error" (aziot-api.md
// §6.4), as aziot maps every certificate-client failure of local identity
// issuance to an internal error; certd's 400 is not passed through.
func TestLocalIdentityIssueFailure(t *testing.T) {
	issue := func(context.Context, string, []byte) ([]byte, error) {
		return nil, api.InvalidParameter("issuer", errors.New("issuer is required for locally-issued certs"))
	}
	cfg := &config.Config{Hostname: "host", LocalID: &config.LocalID{Domain: "example.com"}}
	s, err := New(nil, cfg, Options{Issue: issue, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateLocal(context.Background(), "adhoc", false)
	var ae *api.Error
	if !errors.As(apiError(err), &ae) || ae.Status != 500 || ae.Body() != "internal error" {
		t.Fatalf("local identity without a certificate: %v, want 500 internal error", apiError(err))
	}
}
