package certd

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
)

// issuerRef is C1's explicit issuer: a stored chain and a key handle.
type issuerRef struct {
	certID, keyHandle string
}

// Causes of C1's 400s, worded as aziot's.
var (
	errIssuerRequired = errors.New("issuer is required for locally-issued certs")
	errInvalidHandle  = errors.New("invalid handle")
	errNotKeyPair     = errors.New("handle is not for a key pair")
)

// Issue issues certificate id for the PEM CSR csrPEM, stores the chain
// (new certificate first, then the issuer's chain) under id and returns
// it (aziot-api §5.3). issuer, when set, is the explicit issuer; otherwise
// [cert_issuance.<id>] says how. Errors are *api.Error.
func (s *Server) Issue(ctx context.Context, id string, csrPEM []byte, issuer *issuerRef) ([]byte, error) {
	if _, err := s.store.Path(id); err != nil {
		return nil, storeError("certId", err)
	}
	csr, err := certs.ParseCSR(csrPEM)
	if err != nil {
		return nil, api.InvalidParameter("csr", err)
	}
	unlock := s.lock(id)
	defer unlock()
	var chain []byte
	if issuer != nil {
		chain, err = s.issueExplicit(ctx, id, csr, issuer)
	} else {
		chain, err = s.issueConfigured(ctx, id, csr, id)
	}
	if err != nil {
		return nil, err
	}
	if err := s.store.Put(id, chain); err != nil {
		return nil, storeError("certId", err)
	}
	s.log.Info("certificate issued", "cert", id)
	s.scheduleOne(id)
	return chain, nil
}

// issueExplicit signs with the issuer chain issuer.certID and the key the
// handle resolves to.
func (s *Server) issueExplicit(ctx context.Context, id string, csr *x509.CertificateRequest, issuer *issuerRef) ([]byte, error) {
	issuerPEM, err := s.store.Get(issuer.certID)
	if err != nil {
		return nil, storeError("issuer.certId", err)
	}
	chain, err := certs.ParseChain(issuerPEM)
	if err != nil {
		return nil, api.InvalidParameter("issuer.certId", err)
	}
	ref, err := s.handles.Verify(ctx, issuer.keyHandle)
	if errors.Is(err, hsm.ErrInvalidHandle) {
		return nil, api.InvalidParameter("issuer.privateKeyHandle", errInvalidHandle)
	}
	if err != nil {
		return nil, api.Internal(fmt.Errorf("verify the issuer's key handle: %w", err))
	}
	if ref.Kind != hsm.KindKeyPair {
		return nil, api.InvalidParameter("issuer.privateKeyHandle", errNotKeyPair)
	}
	signer, err := s.keys.Signer(ctx, ref.ID)
	if err != nil {
		return nil, keyError("issuer.privateKeyHandle", err)
	}
	if !s.now().Before(chain[0].NotAfter) {
		return nil, api.InvalidParameter("issuer.certId", certs.ErrIssuerExpired)
	}
	return s.signLocal(id, csr, chain[0], issuerPEM, signer)
}

// keyError maps a key-store failure: a missing key is a 400 naming param,
// anything else a 500.
func keyError(param string, err error) error {
	if errors.Is(err, hsm.ErrNotFound) {
		return api.InvalidParameter(param, errors.New("key not found"))
	}
	return api.Internal(err)
}

// issueConfigured issues by [cert_issuance.<id>]. selfKey is the key pair
// a self-signed certificate is signed with (id, or its temporary key while
// a renewal rotates it).
func (s *Server) issueConfigured(ctx context.Context, id string, csr *x509.CertificateRequest, selfKey string) ([]byte, error) {
	st := s.settings.Load()
	o, ok := st.opts[id]
	if !ok {
		return nil, api.InvalidParameter("issuer", errIssuerRequired)
	}
	switch o.method {
	case "self_signed":
		signer, err := s.keys.Signer(ctx, selfKey)
		if err != nil {
			return nil, api.Internal(fmt.Errorf("self-signed cert %q: key pair %q: %w", id, selfKey, err))
		}
		return s.signLocal(id, csr, nil, nil, signer)
	case "local_ca":
		ca, caPEM, signer, err := s.localCA(ctx, st)
		if err != nil {
			return nil, api.Internal(fmt.Errorf("cert %q: local CA: %w", id, err))
		}
		return s.signLocal(id, csr, ca, caPEM, signer)
	case "est":
		return s.enrollEST(ctx, id, csr, o)
	}
	return nil, api.Internal(fmt.Errorf("cert %q: unknown issuance method %q", id, o.method))
}

// signLocal signs csr with signer under issuer (nil: self-signed) with the
// options of cert id, and returns the new certificate's PEM followed by
// issuerPEM.
func (s *Server) signLocal(id string, csr *x509.CertificateRequest, issuer *x509.Certificate, issuerPEM []byte, signer crypto.Signer) ([]byte, error) {
	o := s.settings.Load().opts[id]
	io := certs.IssueOptions{ExpiryDays: o.expiryDays, Now: s.now()}
	if o.commonName != "" || len(o.subject) > 0 {
		subj, err := certs.Subject(o.commonName, o.subject)
		if err != nil {
			return nil, api.Internal(fmt.Errorf("cert %q: %w", id, err))
		}
		io.Subject = subj
	}
	if issuer == nil && !certs.SamePublicKey(signer.Public(), csr.PublicKey) {
		return nil, api.InvalidParameter("csr", errors.New("the CSR's key is not the key pair of the self-signed certificate"))
	}
	der, err := certs.Issue(csr, issuer, signer, io)
	if err != nil {
		return nil, api.Internal(fmt.Errorf("cert %q: %w", id, err))
	}
	return append(certs.EncodePEM(der), issuerPEM...), nil
}

// localCA returns the local CA's certificate, chain PEM and signer. An
// issued local CA ([cert_issuance.local_ca] cert = { method … }) that does
// not exist yet is created: a key pair "local-ca" and a CA certificate
// issued by its method.
func (s *Server) localCA(ctx context.Context, st *settings) (*x509.Certificate, []byte, crypto.Signer, error) {
	if st.localCACert == "" {
		return nil, nil, nil, errors.New(`method = "local_ca" needs [cert_issuance.local_ca]`)
	}
	caPEM, err := s.store.Get(st.localCACert)
	if errors.Is(err, certs.ErrNotFound) && st.opts[LocalCAID].method != "" && st.localCACert == LocalCAID {
		s.caMu.Lock()
		if caPEM, err = s.store.Get(LocalCAID); errors.Is(err, certs.ErrNotFound) {
			caPEM, err = s.createLocalCA(ctx)
		}
		s.caMu.Unlock()
	}
	if err != nil {
		return nil, nil, nil, err
	}
	chain, err := certs.ParseChain(caPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	signer, err := s.keys.Signer(ctx, st.localCAKey)
	if err != nil {
		return nil, nil, nil, err
	}
	if !certs.SamePublicKey(signer.Public(), chain[0].PublicKey) {
		return nil, nil, nil, fmt.Errorf("key %q does not match certificate %q", st.localCAKey, st.localCACert)
	}
	return chain[0], caPEM, signer, nil
}

// createLocalCA issues the local CA certificate by its own options.
func (s *Server) createLocalCA(ctx context.Context) ([]byte, error) {
	if err := s.keys.CreateKeyPair(ctx, LocalCAID, hsm.ParsePreferredAlgorithms("ec-p256:rsa-2048:*")); err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	signer, err := s.keys.Signer(ctx, LocalCAID)
	if err != nil {
		return nil, err
	}
	csr, err := caCSR(signer, "Warden local CA")
	if err != nil {
		return nil, err
	}
	chain, err := s.issueConfigured(ctx, LocalCAID, csr, LocalCAID)
	if err != nil {
		return nil, err
	}
	if err := s.store.Put(LocalCAID, chain); err != nil {
		return nil, err
	}
	s.log.Info("local CA certificate created", "cert", LocalCAID)
	s.scheduleOne(LocalCAID)
	return chain, nil
}

// caCSR builds a CSR for a CA certificate: basicConstraints CA:TRUE and
// keyUsage keyCertSign, cRLSign, digitalSignature (both critical).
func caCSR(signer crypto.Signer, cn string) (*x509.CertificateRequest, error) {
	subj, err := certs.Subject(cn, nil)
	if err != nil {
		return nil, err
	}
	bc, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	if err != nil {
		return nil, err
	}
	ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x86}, BitLength: 7})
	if err != nil {
		return nil, err
	}
	der, err := certs.NewCSR(signer, certs.CSROptions{Subject: subj, Extensions: []pkix.Extension{
		{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
		{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: ku},
	}})
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificateRequest(der)
}

// EnsureIssued issues certificate id when it does not exist and
// [cert_issuance.<id>] (or an issuance table) says how, as aziot's
// identityd does for the device identity before provisioning: key pair
// keyID is created (ec-p256, else rsa-2048) unless it exists, and a CSR
// with the options' common name or subject (else CN = id) and
// extendedKeyUsage clientAuth is issued. It returns whether it issued.
func (s *Server) EnsureIssued(ctx context.Context, id, keyID string) (bool, error) {
	if s.store.Exists(id) {
		return false, nil
	}
	o, ok := s.settings.Load().opts[id]
	if !ok {
		return false, fmt.Errorf("certd: certificate %q does not exist and has no issuance options", id)
	}
	if err := s.keys.CreateKeyPair(ctx, keyID, hsm.ParsePreferredAlgorithms("ec-p256:rsa-2048:*")); err != nil {
		return false, fmt.Errorf("certd: key pair %q: %w", keyID, err)
	}
	signer, err := s.keys.Signer(ctx, keyID)
	if err != nil {
		return false, fmt.Errorf("certd: key pair %q: %w", keyID, err)
	}
	cn := o.commonName
	if cn == "" && len(o.subject) == 0 {
		cn = id
	}
	subj, err := certs.Subject(cn, o.subject)
	if err != nil {
		return false, fmt.Errorf("certd: certificate %q: %w", id, err)
	}
	der, err := certs.NewCSR(signer, certs.CSROptions{Subject: subj, ClientAuth: true})
	if err != nil {
		return false, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if _, err := s.Issue(ctx, id, csrPEM, nil); err != nil {
		return false, fmt.Errorf("certd: issue %q: %w", id, err)
	}
	return true, nil
}
