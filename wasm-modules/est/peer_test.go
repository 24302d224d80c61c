package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// modes runs f as WASM and as the same source built natively.
func modes(t *testing.T, f func(t *testing.T, native bool)) {
	for _, native := range []bool{false, true} {
		name := "wasm"
		if native {
			name = "native"
		}
		t.Run(name, func(t *testing.T) { f(t, native) })
	}
}

// deviceCSR is a CSR (DER) for a new in-memory key with CN cn.
func deviceCSR(t testing.TB, cn string) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return storeCSR(t, k, cn, nil)
}

func storeCSR(t testing.TB, signer crypto.Signer, cn string, rawSubject []byte) []byte {
	t.Helper()
	subj := rawSubject
	if subj == nil {
		subj, _ = certs.Subject(cn, nil)
	}
	der, err := certs.NewCSR(signer, certs.CSROptions{Subject: subj})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func errCode(err error) string {
	var ge *guest.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return ""
}

// TestPeerBasicAuth: enrollment against the real EST server with HTTP Basic
// credentials that the harness enforces.
func TestPeerBasicAuth(t *testing.T) {
	r := newRig(t, estpeer.Options{})
	modes(t, func(t *testing.T, native bool) {
		ctx := context.Background()
		job := &estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("basic"), CSR: deviceCSR(t, "basic-device"),
			Username: "estuser", Password: "estpwd", TrustCertIDs: []string{"est-ca"}, MaxWaitSeconds: 10}
		res, err := r.run(ctx, native, job)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(res.Certs[0])
		if err != nil || c.Subject.CommonName != "basic-device" || len(res.CACerts) != 1 {
			t.Fatalf("enrolled %v, %d CA certs, %v", c.Subject, len(res.CACerts), err)
		}
		ca, _ := x509.ParseCertificate(res.CACerts[0])
		if err := c.CheckSignatureFrom(ca); err != nil {
			t.Fatal(err)
		}
		job.Password = "wrong"
		if _, err := r.run(ctx, native, job); errCode(err) != estjob.CodeServer || !strings.Contains(err.Error(), "401") {
			t.Fatalf("wrong password: %v", err)
		}
	})
}

// TestPeerBootstrap: the identity is enrolled with a bootstrap client
// certificate (the harness requires a verified client certificate on the
// "tls" label), then used for the next enrollment and for simplereenroll.
func TestPeerBootstrap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bootCAKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "bootstrap CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	bootCADER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, bootCAKey.Public(), bootCAKey)
	bootCA, _ := x509.ParseCertificate(bootCADER)
	os.WriteFile(filepath.Join(dir, "boot-ca.pem"), certs.EncodePEM(bootCADER), 0o644)
	r := newRig(t, estpeer.Options{ClientCAs: []string{filepath.Join(dir, "boot-ca.pem")}})
	// Bootstrap credential: key in the key store, certificate from the bootstrap CA.
	if err := r.keys.CreateKeyPair(ctx, "boot", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	bootSigner, _ := r.keys.Signer(ctx, "boot")
	bootCSR, _ := x509.ParseCertificateRequest(storeCSR(t, bootSigner, "bootstrap device", nil))
	bootDER, _ := certs.Issue(bootCSR, bootCA, bootCAKey, certs.IssueOptions{})
	modes(t, func(t *testing.T, native bool) {
		r.store.Put("boot", certs.EncodePEM(bootDER))
		r.store.Delete("est-id")
		r.keys.DeleteKeyPair(ctx, "est-id")
		base := estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("tls"), TrustCertIDs: []string{"est-ca"}, MaxWaitSeconds: 10,
			IdentityCertID: "est-id", IdentityKeyID: "est-id", BootstrapCertID: "boot", BootstrapKeyID: "boot"}
		job := base
		job.CSR = deviceCSR(t, "device-one")
		res, err := r.run(ctx, native, &job)
		if err != nil {
			t.Fatal(err)
		}
		idPEM, err := r.store.Get("est-id")
		if !res.IdentityIssued || err != nil {
			t.Fatalf("identity issued %v, stored: %v", res.IdentityIssued, err)
		}
		id := chainOf(t, idPEM)
		pub, _ := r.keys.PublicKey(ctx, "est-id")
		if !id[0].PublicKey.(*ecdsa.PublicKey).Equal(pub) || id[0].Subject.CommonName != "device-one" {
			t.Fatalf("identity cert %v is not for key est-id", id[0].Subject)
		}
		// Without the bootstrap certificate, the identity alone must do.
		r.store.Delete("boot")
		job = base
		job.CSR = deviceCSR(t, "device-two")
		if res, err = r.run(ctx, native, &job); err != nil || res.IdentityIssued {
			t.Fatalf("second enrollment: %v (identity issued %v)", err, res != nil && res.IdentityIssued)
		}
		// simplereenroll with the identity: new key, same subject.
		r.keys.CreateKeyPair(ctx, "est-id-temp", []hsm.Algorithm{hsm.ECP256})
		temp, _ := r.keys.Signer(ctx, "est-id-temp")
		job = estjob.Job{Op: estjob.OpReenroll, URL: r.est.URL("tls"), TrustCertIDs: []string{"est-ca"},
			IdentityCertID: "est-id", IdentityKeyID: "est-id", CSR: storeCSR(t, temp, "", id[0].RawSubject)}
		res, err = r.run(ctx, native, &job)
		if err != nil {
			t.Fatalf("reenroll: %v\n%s", err, r.est.Log())
		}
		renewed, _ := x509.ParseCertificate(res.Certs[0])
		if !renewed.PublicKey.(*ecdsa.PublicKey).Equal(temp.Public()) || renewed.Subject.String() != id[0].Subject.String() {
			t.Fatalf("reenrolled %v", renewed.Subject)
		}
		r.keys.DeleteKeyPair(ctx, "est-id-temp")
		// The "tls" label refuses an enrollment without a client certificate.
		job = estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("tls"), TrustCertIDs: []string{"est-ca"}, CSR: deviceCSR(t, "x")}
		if _, err := r.run(ctx, native, &job); errCode(err) != estjob.CodeServer {
			t.Fatalf("without a client certificate: %v", err)
		}
	})
}

func chainOf(t *testing.T, pem []byte) []*x509.Certificate {
	t.Helper()
	c, err := certs.ParseChain(pem)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPeerDeferred: 202 + Retry-After is waited out within the job's
// budget, and refused beyond it (the library's triggererrors label answers
// Retry-After: 600).
func TestPeerDeferred(t *testing.T) {
	r := newRig(t, estpeer.Options{RetryAfter: 1})
	modes(t, func(t *testing.T, native bool) {
		ctx := context.Background()
		job := &estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("defer"), CSR: deviceCSR(t, "deferred"),
			TrustCertIDs: []string{"est-ca"}, MaxWaitSeconds: 10}
		res, err := r.run(ctx, native, job)
		if err != nil || res.Deferrals != 1 || len(res.Certs) != 1 {
			t.Fatalf("deferred enrollment: %+v %v", res, err)
		}
		job = &estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("triggererrors"), CSR: deviceCSR(t, "Trigger Error Deferred"),
			TrustCertIDs: []string{"est-ca"}, MaxWaitSeconds: 10}
		if _, err := r.run(ctx, native, job); errCode(err) != estjob.CodeDeferred {
			t.Fatalf("Retry-After 600: %v", err)
		}
	})
}
