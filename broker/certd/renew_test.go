package certd

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// fakeEST is an ESTRunner that signs every CSR with its own CA for a fixed
// lifetime, or fails while down.
type fakeEST struct {
	t        testing.TB
	ca       *x509.Certificate
	key      crypto.Signer
	lifetime time.Duration

	mu   sync.Mutex
	down bool
	jobs []estjob.Job
}

func newFakeEST(t testing.TB, lifetime time.Duration) *fakeEST {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := caCSR(k, "Fake EST CA")
	der, err := certs.Issue(csr, nil, k, certs.IssueOptions{ExpiryDays: 365})
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &fakeEST{t: t, ca: ca, key: k, lifetime: lifetime}
}

func (f *fakeEST) setDown(v bool) {
	f.mu.Lock()
	f.down = v
	f.mu.Unlock()
}

func (f *fakeEST) RunEST(_ context.Context, job *estjob.Job) (*estjob.Result, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, *job)
	down := f.down
	f.mu.Unlock()
	if down {
		return nil, errors.New("unavailable: connection refused")
	}
	csr, err := x509.ParseCertificateRequest(job.CSR)
	if err != nil {
		return nil, err
	}
	der, err := certs.Issue(csr, f.ca, f.key, certs.IssueOptions{Validity: f.lifetime})
	if err != nil {
		return nil, err
	}
	return &estjob.Result{Certs: [][]byte{der}, CACerts: [][]byte{f.ca.Raw}}, nil
}

func (f *fakeEST) lastJob() estjob.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[len(f.jobs)-1]
}

// issueDirect stores, under certID, a certificate from f for key keyID.
func (e *env) issueDirect(f *fakeEST, certID, keyID string) *x509.Certificate {
	e.t.Helper()
	signer, _ := e.keyPair(keyID)
	csr, err := renewalCSR(signer, f.ca, true)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := f.RunEST(context.Background(), &estjob.Job{CSR: csr.Raw})
	if err != nil {
		e.t.Fatal(err)
	}
	pem, _ := estChain(res)
	if err := e.server.Store().Put(certID, pem); err != nil {
		e.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(res.Certs[0])
	return c
}

func (e *env) publicKey(id string) crypto.PublicKey {
	pub, err := e.keys.PublicKey(context.Background(), id)
	if err != nil {
		return nil
	}
	return pub
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const renewConfig = `
[cert_issuance.est]
identity_cert = "est-id"
identity_pk = "est-id"

[cert_issuance.est.identity_auto_renew]
rotate_key = true
threshold = "50%"
retry = "10%"

[cert_issuance.est.urls]
default = "https://est.example/.well-known/est"

[cert_issuance.device-cert]
method = "est"
`

// TestRenewESTIdentity: a short-lived EST identity certificate is renewed
// on its own at 50% of its lifetime with simplereenroll authenticated by
// itself, its key rotated through est-id-temp; while the server is down
// renewal retries and the old certificate and key stay.
func TestRenewESTIdentity(t *testing.T) {
	e := newEnv(t, renewConfig)
	// A 6-second lifetime leaves room for a loaded machine: the second
	// renewal must fail and be retried before the renewed cert expires.
	f := newFakeEST(t, 6*time.Second)
	e.server.SetEST(f)
	old := e.issueDirect(f, "est-id", "est-id")
	oldPub := e.publicKey("est-id")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.server.Run(ctx)

	at, ok := time.Time{}, false
	waitFor(t, 5*time.Second, "the renewal to be scheduled", func() bool { at, ok = e.server.NextRenewal("est-id"); return ok })
	if want := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2); !at.Equal(want) {
		t.Fatalf("scheduled at %s, want %s", at, want)
	}
	// A renewal stores the new chain and then moves est-id-temp over
	// est-id: it is over when the temp key is gone.
	waitFor(t, 10*time.Second, "the renewal", func() bool {
		l, err := e.server.leaf("est-id")
		return err == nil && l.SerialNumber.Cmp(old.SerialNumber) != 0 && e.publicKey("est-id-temp") == nil
	})
	renewed, _ := e.server.leaf("est-id")
	job := f.lastJob()
	switch {
	case job.Op != estjob.OpReenroll || job.IdentityCertID != "est-id" || job.IdentityKeyID != "est-id":
		t.Fatalf("job %+v", job)
	case !certs.SamePublicKey(e.publicKey("est-id"), renewed.PublicKey):
		t.Fatal("renewed certificate is not for the key est-id")
	case certs.SamePublicKey(oldPub, renewed.PublicKey):
		t.Fatal("key not rotated")
	case e.publicKey("est-id-temp") != nil:
		t.Fatal("temp key left behind")
	case len(renewed.ExtKeyUsage) == 0:
		t.Fatal("no EKU")
	}

	// The server goes down: the next renewal fails, the certificate and key
	// stay, and a retry is scheduled 10% of the lifetime later.
	f.setDown(true)
	keyBefore := e.publicKey("est-id")
	waitFor(t, 15*time.Second, "a failed attempt", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.jobs) >= 3 })
	waitFor(t, 5*time.Second, "the retry to be scheduled", func() bool {
		at, ok := e.server.NextRenewal("est-id")
		return ok && at.Before(renewed.NotAfter) && time.Until(at) <= 800*time.Millisecond
	})
	if l, _ := e.server.leaf("est-id"); l.SerialNumber.Cmp(renewed.SerialNumber) != 0 || !certs.SamePublicKey(keyBefore, e.publicKey("est-id")) {
		t.Fatal("a failed renewal changed the certificate or key")
	}
	if e.publicKey("est-id-temp") != nil {
		t.Fatal("temp key left behind after a failure")
	}
	f.setDown(false)
	waitFor(t, 10*time.Second, "renewal after the server is back", func() bool {
		l, err := e.server.leaf("est-id")
		return err == nil && l.SerialNumber.Cmp(renewed.SerialNumber) != 0
	})
}

// TestRenewExpiredIdentityNeedsBootstrap: an expired identity without a
// bootstrap credential is a fatal renewal failure (not retried).
func TestRenewExpiredIdentityNeedsBootstrap(t *testing.T) {
	e := newEnv(t, renewConfig)
	f := newFakeEST(t, time.Second)
	e.server.SetEST(f)
	old := e.issueDirect(f, "est-id", "est-id")
	time.Sleep(time.Until(old.NotAfter.Add(50 * time.Millisecond)))
	e.server.scheduleOne("est-id")
	e.server.renewals.Remove("est-id")
	e.server.renewScheduled(context.Background(), "est-id")
	if _, ok := e.server.NextRenewal("est-id"); ok {
		t.Fatal("fatal failure rescheduled")
	}
	if len(f.jobs) != 1 { // only issueDirect's
		t.Fatalf("%d jobs", len(f.jobs))
	}
}

// TestRenewLocal: a locally issued certificate with auto_renew renews
// through its method, keeping its key when rotate_key is false and its
// subject and extensions.
func TestRenewLocal(t *testing.T) {
	e := newEnv(t, `
[cert_issuance.local_ca]
cert = { method = "self_signed", common_name = "CA", expiry_days = 365 }

[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = { method = "local_ca", common_name = "dev", auto_renew = { rotate_key = false, threshold = "50%", retry = "4%" } }
`)
	signer, _ := e.keyPair(DeviceID)
	first, err := e.server.Issue(context.Background(), DeviceID, []byte(csrPEM(t, signer, "ignored", certs.CSROptions{ClientAuth: true})), nil)
	if err != nil {
		t.Fatal(err)
	}
	at, ok := e.server.NextRenewal(DeviceID)
	if !ok || time.Until(at) < 14*24*time.Hour {
		t.Fatalf("device-id renewal at %v (%v)", at, ok)
	}
	old := chain(t, string(first))[0]
	var renewed []string
	e.server.onRenewed = func(_ context.Context, id string) { renewed = append(renewed, id) }
	e.server.renewScheduled(context.Background(), DeviceID)
	if !slices.Equal(renewed, []string{DeviceID}) {
		t.Fatalf("OnRenewed got %q, want [%s]", renewed, DeviceID)
	}
	now, _ := e.server.leaf(DeviceID)
	if now.SerialNumber.Cmp(old.SerialNumber) == 0 || !certs.SamePublicKey(now.PublicKey, old.PublicKey) ||
		now.Subject.CommonName != "dev" || len(now.ExtKeyUsage) != 1 || now.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("renewed %v", now.Subject)
	}
	if e.publicKey(DeviceID+"-temp") != nil {
		t.Fatal("temp key without rotate_key")
	}
}

// TestRecoverRotation: a crash after the new certificate was written but
// before the key move is finished at start.
func TestRecoverRotation(t *testing.T) {
	e := newEnv(t, renewConfig)
	f := newFakeEST(t, time.Hour)
	e.issueDirect(f, "est-id", "est-id-temp") // cert is for the temp key
	e.keyPair("est-id")
	e.server.recoverRotations(context.Background())
	l, _ := e.server.leaf("est-id")
	if !certs.SamePublicKey(e.publicKey("est-id"), l.PublicKey) || e.publicKey("est-id-temp") != nil {
		t.Fatal("rotation not finished")
	}
	// A stale temp key the certificate does not use is deleted.
	e.keys.CreateKeyPair(context.Background(), "est-id-temp", []hsm.Algorithm{hsm.ECP256})
	e.server.recoverRotations(context.Background())
	if e.publicKey("est-id-temp") != nil || !certs.SamePublicKey(e.publicKey("est-id"), l.PublicKey) {
		t.Fatal("stale temp key kept or key changed")
	}
}

// TestEnsureIssued: a missing device identity with an issuance table is
// issued once, with its key created; an existing one is left alone.
func TestEnsureIssued(t *testing.T) {
	e := newEnv(t, `
[cert_issuance.local_ca]
cert = { method = "self_signed", common_name = "CA", expiry_days = 365 }

[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = { method = "local_ca", common_name = "my-device" }
`)
	ctx := context.Background()
	issued, err := e.server.EnsureIssued(ctx, DeviceID, DeviceID)
	if err != nil || !issued {
		t.Fatalf("issued %v, %v", issued, err)
	}
	leaf, _ := e.server.leaf(DeviceID)
	if leaf.Subject.CommonName != "my-device" || !certs.SamePublicKey(leaf.PublicKey, e.publicKey(DeviceID)) {
		t.Fatalf("device-id %v", leaf.Subject)
	}
	if issued, err := e.server.EnsureIssued(ctx, DeviceID, DeviceID); err != nil || issued {
		t.Fatalf("second call issued %v, %v", issued, err)
	}
	if _, err := e.server.EnsureIssued(ctx, "unconfigured", "unconfigured"); err == nil {
		t.Fatal("no options, no error")
	}
}

// tlsEST is fakeEST that authenticates as a TLS client would: a job's
// identity certificate, when it exists, must be for its identity key.
type tlsEST struct {
	*fakeEST
	e *env
}

func (f tlsEST) RunEST(ctx context.Context, job *estjob.Job) (*estjob.Result, error) {
	if job.IdentityCertID != "" {
		if leaf, err := f.e.server.leaf(job.IdentityCertID); err == nil && !certs.SamePublicKey(leaf.PublicKey, f.e.publicKey(job.IdentityKeyID)) {
			return nil, errors.New("TLS: the client certificate is not for the client key")
		}
	}
	return f.fakeEST.RunEST(ctx, job)
}

// TestRenewAfterFailedKeyMove: a renewal whose key move failed leaves the
// new certificate stored for <key>-temp (finished at the next start). The
// next renewal, before any restart, must not delete that temp key as
// stale: the certificate's key would be gone for good.
func TestRenewAfterFailedKeyMove(t *testing.T) {
	e := newEnv(t, renewConfig)
	f := newFakeEST(t, time.Hour)
	e.server.SetEST(tlsEST{f, e})
	// What renewOne leaves when MoveKeyPair fails: the chain is for the
	// temp key, the key is still the old one.
	e.issueDirect(f, "est-id", "est-id-temp")
	e.keyPair("est-id")
	e.server.renewScheduled(context.Background(), "est-id")
	leaf, err := e.server.leaf("est-id")
	if err != nil {
		t.Fatal(err)
	}
	if !certs.SamePublicKey(leaf.PublicKey, e.publicKey("est-id")) && !certs.SamePublicKey(leaf.PublicKey, e.publicKey("est-id-temp")) {
		t.Fatal("the certificate's key was deleted")
	}
	if !certs.SamePublicKey(leaf.PublicKey, e.publicKey("est-id")) {
		t.Fatal("est-id's certificate is not for key est-id")
	}
}

// TestRenewAfterDelete: a certificate deleted (C4) after its renewal was
// due but before the renewal took the certificate's lock is not brought
// back by the renewal.
func TestRenewAfterDelete(t *testing.T) {
	e := newEnv(t, renewConfig)
	f := newFakeEST(t, time.Hour)
	e.server.SetEST(f)
	e.issueDirect(f, "est-id", "est-id")
	spec := e.server.settings.Load().renew["est-id"]
	old, err := e.server.leaf("est-id") // renewScheduled has read the leaf …
	if err != nil {
		t.Fatal(err)
	}
	check{204, ""}.verify(t, e.call(root, "DELETE", "/certificates/est-id", "")) // … C4 runs …
	e.server.renewOne(context.Background(), spec, old)                           // … then the renewal.
	if e.server.Store().Exists("est-id") {
		t.Fatal("a deleted certificate was renewed back into the store")
	}
}
