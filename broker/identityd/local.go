package identityd

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
)

// Issuer issues certificate id for a PEM CSR as [cert_issuance.<id>] says
// and returns the PEM chain (certd).
type Issuer func(ctx context.Context, id string, csrPEM []byte) ([]byte, error)

// LocalIdentity is a "local" identity (§6.2).
type LocalIdentity struct {
	Type string     `json:"type"`
	Spec *LocalSpec `json:"spec"`
}

// LocalSpec is a local identity's module and credential.
type LocalSpec struct {
	ModuleID string     `json:"moduleId"`
	Auth     *LocalAuth `json:"auth"`
}

// LocalAuth is a fresh private key (PKCS#8 PEM, not kept) and its
// certificate.
type LocalAuth struct {
	PrivateKey  string `json:"privateKey"`
	Certificate string `json:"certificate"`
	Expiration  string `json:"expiration"`
}

// localPrincipal is the configured local principal named m, or nil.
func localPrincipal(cfg *config.Config, m string) *config.Principal {
	for i := range cfg.Principals {
		p := &cfg.Principals[i]
		if p.Name == m && p.HasIDType("local") {
			return p
		}
	}
	return nil
}

// CreateLocal is I6 with type local: a module that is a configured local
// principal already has one (400).
func (s *Server) CreateLocal(ctx context.Context, m string, serverAuth bool) (*LocalIdentity, error) {
	if localPrincipal(s.config(), m) != nil {
		return nil, api.BadRequest(fmt.Sprintf("local identity for %s already exists", m))
	}
	return s.issueLocal(ctx, m, serverAuth)
}

// GetLocal is I7 with type local: a fresh key and certificate for a
// configured local principal, every call.
func (s *Server) GetLocal(ctx context.Context, m string) (*LocalIdentity, error) {
	p := localPrincipal(s.config(), m)
	if p == nil {
		return nil, ErrModuleNotFound
	}
	return s.issueLocal(ctx, m, p.LocalID != nil && p.LocalID.Attributes == "server")
}

// expirationLayout is RFC 3339 as aziot writes it (chrono's to_rfc3339 of
// a UTC time): "+00:00", not "Z".
const expirationLayout = "2006-01-02T15:04:05+00:00"

var (
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasic       = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidClientAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	oidServerAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
)

// issueLocal generates an RSA-2048 key in memory, asks certd for a
// certificate with CN <m>.<hostname>.<localid.domain> and aziot's critical
// extensions, and returns both.
func (s *Server) issueLocal(ctx context.Context, m string, serverAuth bool) (*LocalIdentity, error) {
	cfg := s.config()
	if cfg.LocalID == nil {
		return nil, api.InvalidParameter("type", errors.New("local identities need [localid]"))
	}
	if s.opts.Issue == nil {
		return nil, errors.New("local identity: no certificate issuer")
	}
	host := cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("local identity key: %w", err)
	}
	bc, _ := asn1.Marshal(struct{}{}) // basicConstraints CA:FALSE (empty SEQUENCE)
	// digitalSignature, nonRepudiation, keyEncipherment: bits 0, 1, 2.
	ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0xE0}, BitLength: 3})
	ekus := []asn1.ObjectIdentifier{oidClientAuth}
	if serverAuth {
		ekus = append(ekus, oidServerAuth)
	}
	eku, _ := asn1.Marshal(ekus)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: m + "." + host + "." + cfg.LocalID.Domain},
		ExtraExtensions: []pkix.Extension{{Id: oidBasic, Critical: true, Value: bc}, {Id: oidKeyUsage, Critical: true, Value: ku},
			{Id: oidExtKeyUsage, Critical: true, Value: eku}}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("local identity CSR: %w", err)
	}
	chain, err := s.opts.Issue(ctx, m, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		// As aziot: any failure of certd here is identityd's internal
		// error (500), not certd's answer passed through.
		return nil, api.Internal(fmt.Errorf("local identity certificate %q: %w", m, err))
	}
	b, _ := pem.Decode(chain)
	if b == nil {
		return nil, errors.New("local identity: certd answered no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("local identity certificate: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("local identity key: %w", err)
	}
	return &LocalIdentity{Type: "local", Spec: &LocalSpec{ModuleID: m, Auth: &LocalAuth{
		PrivateKey:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		Certificate: string(chain),
		Expiration:  cert.NotAfter.UTC().Format(expirationLayout),
	}}}, nil
}
