package certd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// errNoESTModule is the cause of EST issuance without a configured module.
var errNoESTModule = errors.New("EST issuance needs the EST module: configure [warden.modules.est]")

// estJob builds the job that enrolls for cert id with options o: base URL,
// credentials, trust anchors, and the bound on waiting for 202 answers.
func (s *Server) estJob(id string, o certOptions, op string) (*estjob.Job, error) {
	if o.url == "" {
		return nil, fmt.Errorf("cert %q is configured to be issued by EST, but EST URL is not configured", id)
	}
	if strings.HasPrefix(strings.ToLower(o.url), "http://") {
		s.log.Warn("EST URL is plain HTTP: credentials and certificates travel unprotected", "cert", id, "url", o.url)
	}
	st := s.settings.Load()
	a := o.auth
	return &estjob.Job{
		Op:              op,
		URL:             strings.TrimSuffix(o.url, "/"),
		Username:        a.username,
		Password:        a.password,
		IdentityCertID:  a.identityCert,
		IdentityKeyID:   a.identityKey,
		BootstrapCertID: a.bootstrapCert,
		BootstrapKeyID:  a.bootstrapKey,
		TrustCertIDs:    append([]string(nil), st.trusted...),
		SystemRoots:     true,
		MaxWaitSeconds:  int(s.maxWait.Seconds()),
	}, nil
}

// enrollEST enrolls csr for cert id at its EST server (aziot-api §5.4) and
// returns the enrolled certificates followed by the CA certificates, PEM.
// When the EST identity certificate does not exist yet and a bootstrap
// certificate is configured, a stale identity key pair is deleted first;
// the module then creates a new one, enrolls the identity with the
// bootstrap credential and stores it, and certd schedules its renewal.
func (s *Server) enrollEST(ctx context.Context, id string, csr *x509.CertificateRequest, o certOptions) ([]byte, error) {
	job, err := s.estJob(id, o, estjob.OpEnroll)
	if err != nil {
		return nil, api.Internal(err)
	}
	job.CSR = csr.Raw
	job.IdentitySubject = csr.RawSubject
	if o.commonName != "" || len(o.subject) > 0 {
		if subj, err := certs.Subject(o.commonName, o.subject); err == nil {
			job.IdentitySubject = subj
		}
	}
	bootstrap := false
	if job.BootstrapCertID != "" && job.IdentityCertID != "" && !s.store.Exists(job.IdentityCertID) {
		// Another enrollment with the same identity may be enrolling it
		// right now (its key created, its certificate not yet stored):
		// wait for it rather than delete the key under it, and look again.
		s.bootMu.Lock()
		defer s.bootMu.Unlock()
		if bootstrap = !s.store.Exists(job.IdentityCertID); bootstrap {
			if err := s.keys.DeleteKeyPair(ctx, job.IdentityKeyID); err != nil && !errors.Is(err, hsm.ErrNotFound) {
				return nil, api.Internal(fmt.Errorf("cert %q: delete the stale EST identity key %q: %w", id, job.IdentityKeyID, err))
			}
		}
	}
	res, err := s.runEST(ctx, job)
	// The identity the bootstrap flow stored is renewed from now on, also
	// when the enrollment it was for failed afterwards.
	if bootstrap && s.store.Exists(job.IdentityCertID) {
		s.log.Info("EST identity certificate enrolled with the bootstrap certificate", "cert", job.IdentityCertID)
		s.scheduleOne(job.IdentityCertID)
	}
	if err != nil {
		return nil, api.Internal(fmt.Errorf("cert %q: EST enrollment at %s: %w", id, job.URL, err))
	}
	return estChain(res)
}

// runEST runs job in the EST module.
func (s *Server) runEST(ctx context.Context, job *estjob.Job) (*estjob.Result, error) {
	h := s.est.Load()
	if h == nil || h.r == nil {
		return nil, errNoESTModule
	}
	res, err := h.r.RunEST(ctx, job)
	if err != nil {
		return nil, err
	}
	if len(res.Certs) == 0 && job.Op != estjob.OpCACerts {
		return nil, errors.New("the EST server returned no certificate")
	}
	return res, nil
}

// estChain is the PEM of an EST result: the enrolled certificates, then
// the CA certificates not already among them. Every one must parse.
func estChain(res *estjob.Result) ([]byte, error) {
	seen := map[string]bool{}
	var ders [][]byte
	for _, d := range append(append([][]byte(nil), res.Certs...), res.CACerts...) {
		if seen[string(d)] {
			continue
		}
		if _, err := x509.ParseCertificate(d); err != nil {
			return nil, api.Internal(fmt.Errorf("EST response certificate %d: %w", len(ders), err))
		}
		seen[string(d)] = true
		ders = append(ders, d)
	}
	return certs.EncodePEM(ders...), nil
}
