package conformance

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIdentityLocal: local identities (§6.2) through wardend — a fresh
// RSA key and a certificate issued by certd's local CA with aziot's CN and
// extensions, for a configured local principal; creating one for a
// configured principal is refused.
func TestIdentityLocal(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, `
[localid]
domain = "example.com"

[cert_issuance.local_ca]
cert = { method = "self_signed", common_name = "Warden Local CA", expiry_days = 365 }

[cert_issuance.hp-local]
method = "local_ca"

[cert_issuance.adhoc-local]
method = "local_ca"

[[principal]]
uid = 1100
name = "hp-local"
idtype = ["local"]
localid = { type = "x509", attributes = "server" }
`)
	idd := d.socket("identityd")
	type local struct {
		Type string `json:"type"`
		Spec struct {
			ModuleID string `json:"moduleId"`
			Auth     struct {
				PrivateKey  string `json:"privateKey"`
				Certificate string `json:"certificate"`
				Expiration  string `json:"expiration"`
			} `json:"auth"`
		} `json:"spec"`
	}
	r := doAs(t, 1100, request{Socket: idd, Method: "GET", Target: "/identities/modules/hp-local?api-version=2020-09-01&type=local"})
	var l local
	if r.Status != 200 || json.Unmarshal(r.Body, &l) != nil || l.Type != "local" || l.Spec.ModuleID != "hp-local" {
		t.Fatalf("I7 local = %d %s", r.Status, r.Body)
	}
	kb, _ := pem.Decode([]byte(l.Spec.Auth.PrivateKey))
	if kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("private key = %q", l.Spec.Auth.PrivateKey)
	}
	if _, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode([]byte(l.Spec.Auth.Certificate))
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cert.Subject.CommonName, "hp-local.") || !strings.HasSuffix(cert.Subject.CommonName, ".example.com") ||
		!slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		cert.IsCA || cert.Issuer.CommonName != "Warden Local CA" {
		t.Fatalf("certificate: CN %q, EKU %v, CA %v, issuer %q", cert.Subject.CommonName, cert.ExtKeyUsage, cert.IsCA, cert.Issuer.CommonName)
	}
	if exp, err := time.Parse(time.RFC3339, l.Spec.Auth.Expiration); err != nil || !exp.Equal(cert.NotAfter.UTC().Truncate(time.Second)) {
		t.Fatalf("expiration %q vs %v (%v)", l.Spec.Auth.Expiration, cert.NotAfter, err)
	}
	runCases(t, idd, []socketCase{
		{"I6 for a configured local principal", 0, "POST", "/identities/modules?api-version=2020-09-01", `{"type":"local","moduleId":"hp-local"}`, 400, "local identity for hp-local already exists"},
		{"I6 local", 0, "POST", "/identities/modules?api-version=2020-09-01", `{"type":"local","moduleId":"adhoc-local","localIdOpts":{"type":"x509","attributes":"client"}}`, 200, `"moduleId":"adhoc-local"`},
		{"I7 local of another module", 1100, "GET", "/identities/modules/adhoc-local?api-version=2020-09-01&type=local", "", 401, "authorization error"},
		{"I7 local of an unconfigured module", 0, "GET", "/identities/modules/adhoc-local?api-version=2020-09-01&type=local", "", 400, "module identity not found"},
		{"I2 without provisioning", 0, "POST", "/identities/device?api-version=2020-09-01", `{"type":"aziot"}`, 400, "device identity not found"},
	})
}
