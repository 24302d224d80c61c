package certd

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// renewalAlgorithms are the key algorithms of a rotated key, as aziot's
// "ec-p256:rsa-4096:*".
var renewalAlgorithms = hsm.ParsePreferredAlgorithms("ec-p256:rsa-4096:*")

// errFatal marks a renewal failure that retrying cannot fix; the
// certificate is dropped from the schedule until the next reload or
// issuance.
var errFatal = errors.New("renewal cannot succeed")

// errChanged: the certificate was deleted or replaced while its renewal
// waited for the certificate's lock; it is scheduled again from what is
// stored now.
var errChanged = errors.New("the certificate changed before its renewal began")

// errMovePending: the new certificate is stored but its key is still under
// <key>-temp (moving it failed); the next start or renewal finishes it.
var errMovePending = errors.New("the renewed key is still under its temporary ID")

// Run renews certificates until ctx is done: it completes key rotations a
// crash interrupted, schedules every renewable certificate that exists,
// and runs the schedule (one min-heap, one timer).
func (s *Server) Run(ctx context.Context) {
	s.recoverRotations(ctx)
	s.scheduleAll()
	s.renewals.Run(ctx, s.renewScheduled)
}

// NextRenewal returns when certificate id is scheduled to renew.
func (s *Server) NextRenewal(id string) (time.Time, bool) {
	return s.renewals.Next(id)
}

func (s *Server) scheduleAll() {
	for id := range s.settings.Load().renew {
		s.scheduleOne(id)
	}
}

// scheduleOne (re)schedules certificate id when it is renewable and
// exists, from its leaf's validity and its policy.
func (s *Server) scheduleOne(id string) {
	spec, ok := s.settings.Load().renew[id]
	if !ok {
		return
	}
	leaf, err := s.leaf(id)
	if err != nil {
		s.renewals.Remove(id)
		if !errors.Is(err, certs.ErrNotFound) {
			s.log.Warn("renewal: cannot read the certificate", "cert", id, "err", err)
		}
		return
	}
	at := spec.policy.NextRenewal(leaf.NotBefore, leaf.NotAfter, s.now())
	s.renewals.Schedule(id, at)
	s.log.Info("renewal scheduled", "cert", id, "at", at.UTC(), "not_after", leaf.NotAfter.UTC())
}

// leaf returns the first certificate of id's chain.
func (s *Server) leaf(id string) (*x509.Certificate, error) {
	b, err := s.store.Get(id)
	if err != nil {
		return nil, err
	}
	chain, err := certs.ParseChain(b)
	if err != nil {
		return nil, err
	}
	return chain[0], nil
}

// renewScheduled is the scheduler's job: renew, then schedule the next
// renewal, a retry, or (fatal) nothing.
func (s *Server) renewScheduled(ctx context.Context, id string) {
	spec, ok := s.settings.Load().renew[id]
	if !ok {
		return
	}
	old, err := s.leaf(id)
	if err != nil {
		s.log.Error("renewal: certificate gone, not renewing", "cert", id, "err", err)
		return
	}
	err = s.renewOne(ctx, spec, old)
	switch {
	case err == nil:
		s.log.Info("certificate renewed", "cert", id, "rotated_key", spec.policy.RotateKey)
		s.scheduleOne(id)
		if s.onRenewed != nil {
			s.onRenewed(ctx, id)
		}
	case errors.Is(err, errChanged), errors.Is(err, errMovePending):
		s.scheduleOne(id)
	case errors.Is(err, errFatal):
		s.log.Error("renewal failed and will not be retried", "cert", id, "err", err)
	case ctx.Err() != nil:
	default:
		retry := spec.policy.RetryPeriod(old.NotBefore, old.NotAfter)
		at := s.now().Add(retry)
		s.renewals.Schedule(id, at)
		s.log.Warn("renewal failed; the current certificate and key stay", "cert", id, "retry_at", at.UTC(), "err", err)
	}
}

// renewOne renews spec's certificate, whose current leaf is old. With
// rotate_key a temporary key pair <key>-temp signs the CSR and is moved
// over the key after the new chain is stored; on failure it is deleted and
// the certificate and key are left as they were.
func (s *Server) renewOne(ctx context.Context, spec renewSpec, old *x509.Certificate) (err error) {
	unlock := s.lock(spec.certID)
	defer unlock()
	// A C4, C1 or C2 may have run while this renewal waited for the lock.
	if cur, err := s.leaf(spec.certID); err != nil || !bytes.Equal(cur.Raw, old.Raw) {
		return errChanged
	}
	newKey := spec.keyID
	if spec.policy.RotateKey {
		newKey = spec.keyID + tempSuffix
		// A renewal whose key move failed left the certificate for the
		// temp key: finish that move rather than delete the key as stale.
		if pub, err := s.keys.PublicKey(ctx, newKey); err == nil && certs.SamePublicKey(pub, old.PublicKey) {
			if err := s.keys.MoveKeyPair(ctx, newKey, spec.keyID); err != nil {
				return fmt.Errorf("finish the previous key rotation: %w", err)
			}
		}
		if err := s.keys.DeleteKeyPair(ctx, newKey); err != nil && !errors.Is(err, hsm.ErrNotFound) {
			return fmt.Errorf("delete stale key %q: %w", newKey, err)
		}
		if err := s.keys.CreateKeyPair(ctx, newKey, renewalAlgorithms); err != nil {
			return fmt.Errorf("create key %q: %w", newKey, err)
		}
		defer func() {
			if err != nil {
				s.keys.DeleteKeyPair(context.WithoutCancel(ctx), newKey)
			}
		}()
	}
	signer, err := s.keys.Signer(ctx, newKey)
	if err != nil {
		return fmt.Errorf("key %q: %w", newKey, err)
	}
	csr, err := renewalCSR(signer, old, spec.estIdentity)
	if err != nil {
		return err
	}
	var chain []byte
	if spec.estIdentity {
		chain, err = s.reenrollIdentity(ctx, spec, old, csr)
	} else {
		chain, err = s.issueConfigured(ctx, spec.certID, csr, newKey)
	}
	if err != nil {
		return err
	}
	parsed, err := certs.ParseChain(chain)
	if err != nil {
		return err
	}
	if !certs.SamePublicKey(signer.Public(), parsed[0].PublicKey) {
		return errors.New("the renewed certificate is not for the CSR's key")
	}
	if err := s.store.Put(spec.certID, chain); err != nil {
		return err
	}
	if spec.policy.RotateKey {
		if err := s.keys.MoveKeyPair(ctx, newKey, spec.keyID); err != nil {
			// The new certificate is stored with the key still under
			// <key>-temp: recoverRotations at the next start, or the next
			// renewal, finishes the move; keep the temp key.
			s.log.Error("renewal: moving the new key over the old failed; it is finished at the next start", "cert", spec.certID, "err", err)
			return errMovePending
		}
	}
	return nil
}

// reenrollIdentity renews an EST identity certificate: simplereenroll
// authenticated by the certificate itself while it is valid, else
// simpleenroll with the bootstrap credential (fatal without one).
func (s *Server) reenrollIdentity(ctx context.Context, spec renewSpec, old *x509.Certificate, csr *x509.CertificateRequest) ([]byte, error) {
	o := certOptions{method: "est", url: spec.url, auth: spec.auth}
	op := estjob.OpReenroll
	if !s.now().Before(old.NotAfter) {
		if spec.auth.bootstrapCert == "" {
			return nil, fmt.Errorf("%w: EST identity certificate %q expired and no bootstrap certificate is configured", errFatal, spec.certID)
		}
		// Authenticate with the bootstrap credential as the identity.
		o.auth.identityCert, o.auth.identityKey = spec.auth.bootstrapCert, spec.auth.bootstrapKey
		op = estjob.OpEnroll
	} else {
		o.auth.identityCert, o.auth.identityKey = spec.certID, spec.keyID
	}
	o.auth.bootstrapCert, o.auth.bootstrapKey = "", ""
	job, err := s.estJob(spec.certID, o, op)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errFatal, err)
	}
	job.CSR = csr.Raw
	res, err := s.runEST(ctx, job)
	if err != nil {
		return nil, err
	}
	return estChain(res)
}

// renewalCSR builds the CSR of a renewal: the old certificate's subject;
// for an EST identity extendedKeyUsage clientAuth (aziot), otherwise the
// old certificate's SAN, basic constraints, key usage and extended key
// usage, so that a locally issued renewal has the same profile.
func renewalCSR(signer crypto.Signer, old *x509.Certificate, estIdentity bool) (*x509.CertificateRequest, error) {
	o := certs.CSROptions{Subject: old.RawSubject, ClientAuth: estIdentity}
	if !estIdentity {
		keep := []asn1.ObjectIdentifier{{2, 5, 29, 17}, {2, 5, 29, 19}, {2, 5, 29, 15}, {2, 5, 29, 37}}
		for _, e := range old.Extensions {
			for _, k := range keep {
				if e.Id.Equal(k) {
					o.Extensions = append(o.Extensions, pkix.Extension{Id: e.Id, Critical: e.Critical, Value: e.Value})
				}
			}
		}
	}
	der, err := certs.NewCSR(signer, o)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificateRequest(der)
}

// recoverRotations finishes key rotations a crash interrupted: when
// <key>-temp exists and the stored certificate is for it, the temp key is
// moved over the key; a temp key the certificate does not use is deleted.
func (s *Server) recoverRotations(ctx context.Context) {
	for _, spec := range s.settings.Load().renew {
		if !spec.policy.RotateKey {
			continue
		}
		temp := spec.keyID + tempSuffix
		pub, err := s.keys.PublicKey(ctx, temp)
		if err != nil {
			continue
		}
		leaf, err := s.leaf(spec.certID)
		if err == nil && certs.SamePublicKey(pub, leaf.PublicKey) {
			if err := s.keys.MoveKeyPair(ctx, temp, spec.keyID); err != nil {
				s.log.Error("renewal recovery: moving the rotated key failed", "cert", spec.certID, "err", err)
				continue
			}
			s.log.Warn("renewal recovery: finished an interrupted key rotation", "cert", spec.certID, "key", spec.keyID)
			continue
		}
		if err := s.keys.DeleteKeyPair(ctx, temp); err == nil {
			s.log.Info("renewal recovery: deleted an unused temporary key", "key", temp)
		}
	}
}
