package certd

import (
	"context"
	"errors"
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// bootstrapEST is an ESTRunner that does what the EST module does for an
// EST identity that does not exist yet (wasm-modules/est, credential):
// create the identity key pair (an existing one is kept), enroll a CSR for
// it with the bootstrap credential and store the identity certificate;
// then it enrolls the job's CSR. enrolling, when set, is called between
// the identity's CSR and its enrollment (the network round trip).
type bootstrapEST struct {
	*fakeEST
	e         *env
	enrolling func(job *estjob.Job)
	// failJob fails the job's own enrollment, after the identity's.
	failJob bool
}

func (b *bootstrapEST) RunEST(ctx context.Context, job *estjob.Job) (*estjob.Result, error) {
	issued := false
	if job.IdentityCertID != "" && job.BootstrapCertID != "" && !b.e.server.Store().Exists(job.IdentityCertID) {
		if err := b.e.keys.CreateKeyPair(ctx, job.IdentityKeyID, []hsm.Algorithm{hsm.ECP256}); err != nil {
			return nil, err
		}
		signer, err := b.e.keys.Signer(ctx, job.IdentityKeyID)
		if err != nil {
			return nil, err
		}
		csr, err := renewalCSR(signer, b.ca, true)
		if err != nil {
			return nil, err
		}
		if b.enrolling != nil {
			b.enrolling(job)
		}
		res, err := b.fakeEST.RunEST(ctx, &estjob.Job{CSR: csr.Raw})
		if err != nil {
			return nil, err
		}
		pem, err := estChain(res)
		if err != nil {
			return nil, err
		}
		if err := b.e.server.Store().Put(job.IdentityCertID, pem); err != nil {
			return nil, err
		}
		issued = true
	}
	if b.failJob {
		return nil, errors.New("simpleenroll: 403")
	}
	res, err := b.fakeEST.RunEST(ctx, job)
	if err != nil {
		return nil, err
	}
	res.IdentityIssued = issued
	return res, nil
}

// bootstrapConfig enrolls a-1 over EST with a bootstrap credential (est-boot)
// and no EST identity yet.
const bootstrapConfig = `
[cert_issuance.est.auth]
bootstrap_identity_cert = "est-boot"
bootstrap_identity_pk = "est-boot"

[cert_issuance.est.urls]
default = "https://est.example/.well-known/est"

[cert_issuance.a-1]
method = "est"
`

// TestESTBootstrapConcurrentEnrollments: two EST enrollments that share an
// identity which does not exist yet, the second arriving while the first
// is enrolling the identity with the bootstrap certificate. The second must
// not delete the identity key the first is enrolling: the stored identity
// certificate must be for the stored identity key.
func TestESTBootstrapConcurrentEnrollments(t *testing.T) {
	e := newEnv(t, bootstrapConfig+`
[cert_issuance.a-2]
method = "est"
[cert_issuance.a-3]
method = "est"
`)
	f := newFakeEST(t, time.Hour)
	e.issueDirect(f, "est-boot", "est-boot")
	// Two certs whose issuance locks are different stripes, so that only
	// the identity can order them.
	stripe := func(id string) uint64 { return maphash.String(e.server.seed, id) % uint64(len(e.server.locks)) }
	first, second := "a-1", "a-2"
	if stripe(first) == stripe(second) {
		second = "a-3"
	}
	enrolling, release := make(chan struct{}), make(chan struct{})
	var firstCall atomic.Bool
	e.server.SetEST(&bootstrapEST{fakeEST: f, e: e, enrolling: func(*estjob.Job) {
		if firstCall.CompareAndSwap(false, true) {
			close(enrolling)
			<-release
		}
	}})
	issue := func(id string) <-chan error {
		done := make(chan error, 1)
		go func() {
			signer, _ := e.keyPair(id)
			_, err := e.server.Issue(context.Background(), id, []byte(csrPEM(t, signer, id, certs.CSROptions{})), nil)
			done <- err
		}()
		return done
	}
	done1 := issue(first)
	<-enrolling
	done2 := issue(second)
	select { // the second may wait for the first's identity
	case err := <-done2:
		done2 = nil
		if err != nil {
			t.Logf("second enrollment while the identity was enrolled: %v", err)
		}
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	if err := <-done1; err != nil {
		t.Fatalf("first enrollment: %v", err)
	}
	if done2 != nil {
		if err := <-done2; err != nil {
			t.Fatalf("second enrollment: %v", err)
		}
	}
	id, err := e.server.leaf("est-id")
	if err != nil {
		t.Fatal(err)
	}
	if !certs.SamePublicKey(id.PublicKey, e.publicKey("est-id")) {
		t.Fatalf("the EST identity certificate is not for key est-id (key present: %v)", e.publicKey("est-id") != nil)
	}
}

// TestESTBootstrapIdentityRenewedAfterFailedJob: the bootstrap flow stored
// the EST identity, then the enrollment it was for failed. The identity is
// renewed all the same (before, only a restart scheduled it).
func TestESTBootstrapIdentityRenewedAfterFailedJob(t *testing.T) {
	e := newEnv(t, bootstrapConfig)
	f := newFakeEST(t, time.Hour)
	e.issueDirect(f, "est-boot", "est-boot")
	e.server.SetEST(&bootstrapEST{fakeEST: f, e: e, failJob: true})
	signer, _ := e.keyPair("a-1")
	if _, err := e.server.Issue(context.Background(), "a-1", []byte(csrPEM(t, signer, "a-1", certs.CSROptions{})), nil); err == nil {
		t.Fatal("the enrollment succeeded")
	}
	if !e.server.Store().Exists("est-id") {
		t.Fatal("the bootstrap flow stored no identity")
	}
	if _, ok := e.server.NextRenewal("est-id"); !ok {
		t.Fatal("the EST identity the bootstrap flow stored is not scheduled for renewal")
	}
}
