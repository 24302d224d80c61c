package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"
)

// DefaultExpiryDays is the validity of a locally issued certificate when
// its options give none (aziot's default).
const DefaultExpiryDays = 30

// maxCNLength is the longest common name aziot writes (X.509 ub-common-name).
const maxCNLength = 64

// Object identifiers of the extensions issuance looks at.
var (
	oidSubjectKeyID   = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// ErrInvalidCSR: the CSR is not a PEM CERTIFICATE REQUEST whose signature
// verifies.
var ErrInvalidCSR = errors.New("invalid CSR")

// ErrIssuerExpired: the issuing certificate's notAfter is not after the
// issuance time. The certificate would end before it began; renewing such
// a certificate as soon as it is issued was a loop of key generations.
var ErrIssuerExpired = errors.New("the issuer's certificate has expired")

// ParseCSR parses a PEM "CERTIFICATE REQUEST" (or "NEW CERTIFICATE
// REQUEST") and checks its self-signature.
func ParseCSR(pemText []byte) (*x509.CertificateRequest, error) {
	for {
		var b *pem.Block
		b, pemText = pem.Decode(pemText)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST", ErrInvalidCSR)
		}
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			continue
		}
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
		}
		if err := csr.CheckSignature(); err != nil {
			return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
		}
		return csr, nil
	}
}

// ParseChain parses every CERTIFICATE block of a PEM text, leaf first.
func ParseChain(pemText []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, pemText = pem.Decode(pemText)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: parse certificate %d: %w", len(out), err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("certs: no PEM CERTIFICATE")
	}
	return out, nil
}

// EncodePEM writes DER certificates as PEM, in order.
func EncodePEM(ders ...[]byte) []byte {
	var buf bytes.Buffer
	for _, d := range ders {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return buf.Bytes()
}

// subjectAttrs maps the attribute names a subject table may use (openssl's
// short and long names) to their OIDs.
var subjectAttrs = map[string]asn1.ObjectIdentifier{
	"C": {2, 5, 4, 6}, "countryName": {2, 5, 4, 6},
	"ST": {2, 5, 4, 8}, "stateOrProvinceName": {2, 5, 4, 8},
	"L": {2, 5, 4, 7}, "localityName": {2, 5, 4, 7},
	"O": {2, 5, 4, 10}, "organizationName": {2, 5, 4, 10},
	"OU": {2, 5, 4, 11}, "organizationalUnitName": {2, 5, 4, 11},
	"CN": {2, 5, 4, 3}, "commonName": {2, 5, 4, 3},
	"serialNumber": {2, 5, 4, 5}, "title": {2, 5, 4, 12},
	"street": {2, 5, 4, 9}, "postalCode": {2, 5, 4, 17},
	"GN": {2, 5, 4, 42}, "givenName": {2, 5, 4, 42},
	"SN": {2, 5, 4, 4}, "surname": {2, 5, 4, 4},
	"DC": {0, 9, 2342, 19200300, 100, 1, 25}, "domainComponent": {0, 9, 2342, 19200300, 100, 1, 25},
	"UID": {0, 9, 2342, 19200300, 100, 1, 1}, "userId": {0, 9, 2342, 19200300, 100, 1, 1},
	"emailAddress": {1, 2, 840, 113549, 1, 9, 1},
}

// subjectOrder is the order attributes are written in: country first,
// common name last, as X.500 names are usually read; others by name.
var subjectOrder = map[string]int{"C": 1, "ST": 2, "L": 3, "street": 4, "O": 5, "OU": 6, "CN": 9}

// Subject returns the DER of a subject name built from a common name
// (cn != "") or from a table of attribute names to values, one RDN each,
// country first and common name last. A CN longer than 64 characters is
// truncated, as aziot does.
func Subject(cn string, table map[string]string) ([]byte, error) {
	if cn != "" {
		table = map[string]string{"CN": cn}
	}
	if len(table) == 0 {
		return nil, errors.New("certs: empty subject")
	}
	names := make([]string, 0, len(table))
	for k := range table {
		if _, ok := subjectAttrs[k]; !ok {
			return nil, fmt.Errorf("certs: unknown subject attribute %q", k)
		}
		names = append(names, k)
	}
	rank := func(k string) int {
		for s, r := range subjectOrder {
			if subjectAttrs[s].Equal(subjectAttrs[k]) {
				return r
			}
		}
		return 7
	}
	sort.Slice(names, func(i, j int) bool {
		if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	var rdns pkix.RDNSequence
	for _, k := range names {
		oid := subjectAttrs[k]
		v := table[k]
		if oid.Equal(subjectAttrs["CN"]) {
			v = truncateCN(v)
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
	}
	der, err := asn1.Marshal(rdns)
	if err != nil {
		return nil, fmt.Errorf("certs: subject: %w", err)
	}
	return der, nil
}

func truncateCN(cn string) string {
	if r := []rune(cn); len(r) > maxCNLength {
		return string(r[:maxCNLength])
	}
	return cn
}

// IssueOptions are the parameters of a locally signed certificate.
type IssueOptions struct {
	// Subject, when set, is the DER subject name that replaces the CSR's
	// (see Subject).
	Subject []byte
	// ExpiryDays is the validity in days; 0 means DefaultExpiryDays.
	ExpiryDays int
	// Validity, when non-zero, overrides ExpiryDays (tests, renewals).
	Validity time.Duration
	// Now is the issuance time (notBefore); zero means time.Now().
	Now time.Time
}

// Issue signs a certificate for the CSR's public key with signer. issuer
// is the issuing CA's certificate, or nil for a self-signed certificate
// (signer must then hold the CSR's key). aziot's rules (aziot-api §5.3):
// X.509 v3, notBefore = now, notAfter = now + expiry capped at the issuer's
// notAfter, the subject override or the CSR's subject, every CSR extension
// copied, a SubjectKeyIdentifier added when the CSR has none, an
// AuthorityKeyIdentifier (keyid) added for a CA-issued certificate when the
// CSR has none and the issuer has an SKID, SHA-256 (ECDSA or RSA PKCS#1).
// It returns the certificate's DER.
func Issue(csr *x509.CertificateRequest, issuer *x509.Certificate, signer crypto.Signer, o IssueOptions) ([]byte, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := o.Validity
	if validity <= 0 {
		days := o.ExpiryDays
		if days <= 0 {
			days = DefaultExpiryDays
		}
		validity = time.Duration(days) * 24 * time.Hour
	}
	notBefore := now.UTC().Truncate(time.Second)
	notAfter := notBefore.Add(validity)
	if issuer != nil && notAfter.After(issuer.NotAfter) {
		if !notBefore.Before(issuer.NotAfter) {
			return nil, fmt.Errorf("certs: %w: it ended at %s", ErrIssuerExpired, issuer.NotAfter.UTC().Format(time.RFC3339))
		}
		notAfter = issuer.NotAfter
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    sn.Add(sn, big.NewInt(1)),
		NotBefore:       notBefore,
		NotAfter:        notAfter,
		ExtraExtensions: append([]pkix.Extension(nil), csr.Extensions...),
	}
	tmpl.RawSubject = csr.RawSubject
	if o.Subject != nil {
		tmpl.RawSubject = o.Subject
	}
	if !hasExtension(csr.Extensions, oidSubjectKeyID) {
		skid, err := KeyID(csr.PublicKey)
		if err != nil {
			return nil, err
		}
		tmpl.SubjectKeyId = skid
	}
	parent := tmpl // self-signed: issuer name = subject
	if issuer != nil {
		// x509.CreateCertificate adds AKID = the issuer's SKID unless the
		// copied CSR extensions carry one.
		parent = issuer
	} else if !SamePublicKey(signer.Public(), csr.PublicKey) {
		return nil, errors.New("certs: a self-signed certificate must be signed by the CSR's own key")
	}
	tmpl.SignatureAlgorithm = signatureAlgorithm(signer.Public())
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("certs: sign certificate: %w", err)
	}
	return der, nil
}

func hasExtension(exts []pkix.Extension, oid asn1.ObjectIdentifier) bool {
	for _, e := range exts {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// KeyID is the RFC 5280 §4.2.1.2 method (1) key identifier, the SHA-1 of
// the subjectPublicKey bits, as openssl's subjectKeyIdentifier=hash.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("certs: key identifier: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("certs: key identifier: %w", err)
	}
	sum := sha1.Sum(spki.Key.Bytes)
	return sum[:], nil
}

// SamePublicKey reports whether a and b are the same public key.
func SamePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// signatureAlgorithm is SHA-256 with the key's algorithm.
func signatureAlgorithm(pub crypto.PublicKey) x509.SignatureAlgorithm {
	switch pub.(type) {
	case *rsa.PublicKey:
		return x509.SHA256WithRSA
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256
	}
	return x509.UnknownSignatureAlgorithm
}

// CSROptions are the contents of a CSR built by NewCSR.
type CSROptions struct {
	// Subject is the DER subject name (see Subject, or a certificate's
	// RawSubject).
	Subject []byte
	// ClientAuth adds extendedKeyUsage = clientAuth (EST identity certs).
	ClientAuth bool
	// Extensions are added as they are.
	Extensions []pkix.Extension
}

// NewCSR builds a SHA-256 CSR signed by signer (whose key may live in a
// key store), returning its DER.
func NewCSR(signer crypto.Signer, o CSROptions) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		RawSubject:         o.Subject,
		ExtraExtensions:    append([]pkix.Extension(nil), o.Extensions...),
		SignatureAlgorithm: signatureAlgorithm(signer.Public()),
	}
	if o.ClientAuth && !hasExtension(o.Extensions, oidExtKeyUsage) {
		v, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}})
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidExtKeyUsage, Value: v})
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, signer)
	if err != nil {
		return nil, fmt.Errorf("certs: build CSR: %w", err)
	}
	return der, nil
}
