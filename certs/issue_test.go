package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrFor builds a CSR for key with subject CN cn and extra extensions.
func csrFor(t testing.TB, key crypto.Signer, cn string, exts ...pkix.Extension) *x509.CertificateRequest {
	t.Helper()
	subj, err := Subject(cn, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key, CSROptions{Subject: subj, Extensions: exts})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func mustExt(t testing.TB, oid asn1.ObjectIdentifier, critical bool, v any) pkix.Extension {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oid, Critical: critical, Value: b}
}

func findExt(c *x509.Certificate, oid asn1.ObjectIdentifier) *pkix.Extension {
	for i := range c.Extensions {
		if c.Extensions[i].Id.Equal(oid) {
			return &c.Extensions[i]
		}
	}
	return nil
}

// openssl runs openssl verify on leaf (PEM) with root as the trust anchor
// and untrusted intermediates, failing the test unless it says OK.
func opensslVerify(t *testing.T, root []byte, untrusted []byte, leaf []byte, purpose string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"verify", "-x509_strict", "-CAfile", write("root.pem", root)}
	if len(untrusted) > 0 {
		args = append(args, "-untrusted", write("chain.pem", untrusted))
	}
	if purpose != "" {
		args = append(args, "-purpose", purpose)
	}
	args = append(args, write("leaf.pem", leaf))
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// caCSRExtensions are what aziot-edged puts in its CA CSR.
func caCSRExtensions(t testing.TB) []pkix.Extension {
	type basicConstraints struct {
		IsCA bool `asn1:"optional"`
	}
	ku := asn1.BitString{Bytes: []byte{0x06}, BitLength: 7} // keyCertSign | cRLSign
	return []pkix.Extension{
		mustExt(t, asn1.ObjectIdentifier{2, 5, 29, 19}, true, basicConstraints{IsCA: true}),
		mustExt(t, asn1.ObjectIdentifier{2, 5, 29, 15}, true, ku),
	}
}

func TestIssueChainsVerify(t *testing.T) {
	rootKey := ecKey(t)
	rootDER, err := Issue(csrFor(t, rootKey, "Warden Test Root", caCSRExtensions(t)...), nil, rootKey, IssueOptions{ExpiryDays: 365})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	interDER, err := Issue(csrFor(t, rsaKey, "Warden Test Intermediate", caCSRExtensions(t)...), root, rootKey, IssueOptions{ExpiryDays: 30})
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	san := mustExt(t, asn1.ObjectIdentifier{2, 5, 29, 17}, false, []asn1.RawValue{{Class: 2, Tag: 2, Bytes: []byte("device.example")}})
	eku := mustExt(t, oidExtKeyUsage, false, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}})
	leafKey := ecKey(t)
	leafCSR := csrFor(t, leafKey, "device", san, eku)
	subj, _ := Subject("", map[string]string{"CN": strings.Repeat("x", 80), "L": "AQ", "ST": "Antarctica"})
	leafDER, err := Issue(leafCSR, inter, rsaKey, IssueOptions{ExpiryDays: 3650, Subject: subj})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)

	t.Run("openssl verify", func(t *testing.T) {
		opensslVerify(t, EncodePEM(rootDER), nil, EncodePEM(rootDER), "")
		opensslVerify(t, EncodePEM(rootDER), EncodePEM(interDER), EncodePEM(leafDER), "sslserver")
		opensslVerify(t, EncodePEM(rootDER), EncodePEM(interDER), EncodePEM(leafDER), "sslclient")
	})
	cases := []struct {
		name string
		ok   bool
	}{
		{"root is self-signed by its own key, v3", root.Version == 3 && root.CheckSignatureFrom(root) == nil},
		{"root has an SKID = hash of its key and no AKID", bytes.Equal(root.SubjectKeyId, mustKeyID(t, rootKey.Public())) && findExt(root, oidAuthorityKeyID) == nil},
		{"root copied basicConstraints CA and keyUsage", root.IsCA && root.KeyUsage == x509.KeyUsageCertSign|x509.KeyUsageCRLSign},
		{"intermediate AKID = root SKID", bytes.Equal(inter.AuthorityKeyId, root.SubjectKeyId)},
		{"intermediate signed with SHA-256 ECDSA", inter.SignatureAlgorithm == x509.ECDSAWithSHA256},
		{"leaf signed with SHA-256 RSA", leaf.SignatureAlgorithm == x509.SHA256WithRSA},
		{"leaf capped at the issuer's notAfter", leaf.NotAfter.Equal(inter.NotAfter)},
		{"leaf copies SAN and EKU", len(leaf.DNSNames) == 1 && leaf.DNSNames[0] == "device.example" && len(leaf.ExtKeyUsage) == 2},
		{"leaf subject override, CN truncated to 64", leaf.Subject.CommonName == strings.Repeat("x", 64) && leaf.Subject.Locality[0] == "AQ" && leaf.Subject.Province[0] == "Antarctica"},
		{"leaf issuer = intermediate subject", bytes.Equal(leaf.RawIssuer, inter.RawSubject)},
		{"leaf AKID = intermediate SKID, SKID added", bytes.Equal(leaf.AuthorityKeyId, inter.SubjectKeyId) && bytes.Equal(leaf.SubjectKeyId, mustKeyID(t, leafKey.Public()))},
		{"intermediate validity 30 days", inter.NotAfter.Sub(inter.NotBefore) == 30*24*time.Hour},
	}
	for _, tc := range cases {
		if !tc.ok {
			t.Errorf("%s: no", tc.name)
		}
	}
}

func mustKeyID(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestIssueKeepsCSRKeyIDs: a CSR that carries SKID and AKID keeps them.
func TestIssueKeepsCSRKeyIDs(t *testing.T) {
	caKey := ecKey(t)
	caDER, _ := Issue(csrFor(t, caKey, "ca", caCSRExtensions(t)...), nil, caKey, IssueOptions{})
	ca, _ := x509.ParseCertificate(caDER)
	skid := mustExt(t, oidSubjectKeyID, false, []byte{1, 2, 3})
	akid := mustExt(t, oidAuthorityKeyID, false, struct {
		ID []byte `asn1:"optional,tag:0"`
	}{[]byte{9, 9}})
	der, err := Issue(csrFor(t, ecKey(t), "leaf", skid, akid), ca, caKey, IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if !bytes.Equal(c.SubjectKeyId, []byte{1, 2, 3}) || !bytes.Equal(c.AuthorityKeyId, []byte{9, 9}) {
		t.Fatalf("SKID %x AKID %x", c.SubjectKeyId, c.AuthorityKeyId)
	}
	if c.NotAfter.Sub(c.NotBefore) != DefaultExpiryDays*24*time.Hour {
		t.Fatalf("default validity %s", c.NotAfter.Sub(c.NotBefore))
	}
}

func TestSelfSignedNeedsTheCSRKey(t *testing.T) {
	if _, err := Issue(csrFor(t, ecKey(t), "x"), nil, ecKey(t), IssueOptions{}); err == nil {
		t.Fatal("self-signed with another key succeeded")
	}
}

func TestParseCSR(t *testing.T) {
	good := csrFor(t, ecKey(t), "x")
	goodPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good.Raw})
	tampered := bytes.Clone(good.Raw)
	tampered[len(tampered)-3] ^= 0xff
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"good", goodPEM, true},
		{"NEW CERTIFICATE REQUEST", pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: good.Raw}), true},
		{"after another block", append(EncodePEM([]byte{1}), goodPEM...), true},
		{"not PEM", good.Raw, false},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), false},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0}}), false},
	}
	for _, tc := range cases {
		_, err := ParseCSR(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
		}
	}
}

func TestSubject(t *testing.T) {
	cases := []struct {
		cn    string
		table map[string]string
		want  string
		ok    bool
	}{
		{"my-device", nil, "CN=my-device", true},
		{"", map[string]string{"CN": "my-device", "L": "AQ", "ST": "Antarctica"}, "CN=my-device,L=AQ,ST=Antarctica", true},
		{"", map[string]string{"CN": "a", "O": "Example", "C": "DE", "OU": "x"}, "CN=a,OU=x,O=Example,C=DE", true},
		{"", map[string]string{"bogus": "x"}, "", false},
		{"", nil, "", false},
	}
	for _, tc := range cases {
		der, err := Subject(tc.cn, tc.table)
		if (err == nil) != tc.ok {
			t.Errorf("Subject(%q, %v): %v", tc.cn, tc.table, err)
			continue
		}
		if !tc.ok {
			continue
		}
		var rdn pkix.RDNSequence
		asn1.Unmarshal(der, &rdn)
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		if got := n.String(); got != tc.want {
			t.Errorf("Subject(%q, %v) = %s, want %s", tc.cn, tc.table, got, tc.want)
		}
	}
}

// TestIssueUnderExpiredIssuer: an issuer whose notAfter is at or before
// the issuance time issues nothing (the certificate would end before it
// began); one that expires later caps the certificate's notAfter.
func TestIssueUnderExpiredIssuer(t *testing.T) {
	caKey := ecKey(t)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	caDER, err := Issue(csrFor(t, caKey, "Expiring CA", caCSRExtensions(t)...), nil, caKey, IssueOptions{Validity: time.Hour, Now: start})
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafCSR := csrFor(t, ecKey(t), "leaf")
	for _, tc := range []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"within the CA's life", start.Add(30 * time.Minute), false},
		{"at the CA's notAfter", start.Add(time.Hour), true},
		{"after it", start.Add(48 * time.Hour), true},
	} {
		der, err := Issue(leafCSR, ca, caKey, IssueOptions{ExpiryDays: 30, Now: tc.now})
		if tc.expired {
			if !errors.Is(err, ErrIssuerExpired) {
				t.Errorf("%s: err = %v, want ErrIssuerExpired", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		leaf, _ := x509.ParseCertificate(der)
		if !leaf.NotAfter.Equal(ca.NotAfter) || !leaf.NotBefore.Before(leaf.NotAfter) {
			t.Errorf("%s: leaf valid %s–%s, want it to end with the CA at %s", tc.name, leaf.NotBefore, leaf.NotAfter, ca.NotAfter)
		}
	}
}
