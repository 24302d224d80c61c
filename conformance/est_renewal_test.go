package conformance

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientcertd "github.com/warden-iot/warden/client/certd"
	clientkeyd "github.com/warden-iot/warden/client/keyd"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
)

// estLifetime is the validity of the certificates the EST server issues in
// the renewal tests: with threshold "50%" wardend renews after a minute.
const estLifetime = 2 * time.Minute

// renewalRig is a wardend whose EST identity ("est-id", obtained with a
// bootstrap certificate) renews at 50% of a 2-minute lifetime, retrying
// every 4% (4.8 s), with key rotation, against its own EST server.
type renewalRig struct {
	d   *daemon
	srv *estpeer.Server
	c   *clientcertd.Client
	k   *clientkeyd.Client
}

func newRenewalRig(t *testing.T) *renewalRig {
	t.Helper()
	dir := newDir(t)
	boot := newBootstrap(t, dir)
	srv := estpeer.Start(t, estpeer.Options{Dir: filepath.Join(dir, "est"), Lifetime: estLifetime, ClientCAs: []string{boot.caFile}})
	d := startDaemon(t, estModuleConfig(t, estModule(t, "v1"), srv)+fmt.Sprintf(`
[cert_issuance.est]
trusted_certs = ["file://%s"]

[cert_issuance.est.auth]
username = "estuser"
password = "estpwd"
bootstrap_identity_cert = "file://%s"
bootstrap_identity_pk = "file://%s"

[cert_issuance.est.identity_auto_renew]
rotate_key = true
threshold = "50%%"
retry = "4%%"

[cert_issuance.est.urls]
default = %q

[cert_issuance.device-cert]
method = "est"
`, srv.CAFile(), boot.certFile, boot.keyFile, srv.URL("basic-tls")))
	r := &renewalRig{d: d, srv: srv, c: clientcertd.New(d.socket("certd")), k: clientkeyd.New(d.socket("keyd"))}
	t.Cleanup(r.c.Close)
	t.Cleanup(r.k.Close)
	return r
}

// identity returns the stored EST identity certificate.
func (r *renewalRig) identity(t *testing.T) *x509.Certificate {
	t.Helper()
	chain, err := r.c.Get(context.Background(), "est-id")
	if err != nil {
		t.Fatalf("est-id: %v", err)
	}
	return leafOf(t, chain)
}

// key returns the public key of key pair id, or nil when it does not exist.
func (r *renewalRig) key(t *testing.T, id string) crypto.PublicKey {
	t.Helper()
	ctx := context.Background()
	h, err := r.k.LoadKeyPair(ctx, id)
	if err != nil {
		return nil
	}
	pub, err := r.k.PublicKey(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// enrollDevice issues device-cert, which enrolls the EST identity first
// with the bootstrap certificate, and returns that identity.
func (r *renewalRig) enrollDevice(t *testing.T) *x509.Certificate {
	t.Helper()
	signer, _ := storeSigner(t, r.d, "device-cert")
	if _, err := r.c.Create(context.Background(), "device-cert", makeCSR(t, signer, "renewal-device"), nil); err != nil {
		t.Fatalf("%v\n%s", err, r.srv.Log())
	}
	id := r.identity(t)
	if got := id.NotAfter.Sub(id.NotBefore); got > estLifetime+2*time.Second || got < estLifetime-2*time.Second {
		t.Fatalf("identity lifetime %s, want %s", got, estLifetime)
	}
	return id
}

// TestESTRenewal: the broker renews a 2-minute EST identity on its own at
// 50% of its lifetime, with simplereenroll and a rotated key; and a
// renewal whose EST server is down retries, keeping the old certificate
// (still valid) and key, and succeeds once the server is back.
func TestESTRenewal(t *testing.T) {
	t.Run("renewed on its own with the key rotated", func(t *testing.T) {
		t.Parallel()
		r := newRenewalRig(t)
		old := r.enrollDevice(t)
		oldKey := r.key(t, "est-id")
		if !samePub(oldKey, old.PublicKey) {
			t.Fatal("est-id's key is not the identity's")
		}
		half := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2)
		var renewed *x509.Certificate
		waitUntil(t, half.Add(30*time.Second), "the identity to be renewed", func() bool {
			renewed = r.identity(t)
			return renewed.SerialNumber.Cmp(old.SerialNumber) != 0
		})
		if time.Now().Before(half) {
			t.Fatalf("renewed before 50%% of the lifetime (%s)", half)
		}
		newKey := r.key(t, "est-id")
		switch {
		case !samePub(newKey, renewed.PublicKey):
			t.Fatal("the renewed identity is not for key est-id")
		case samePub(newKey, oldKey):
			t.Fatal("the key was not rotated")
		case r.key(t, "est-id-temp") != nil:
			t.Fatal("est-id-temp left behind")
		case renewed.Subject.String() != old.Subject.String():
			t.Fatalf("subject changed: %s", renewed.Subject)
		case !served(r.srv.Log(), "/simplereenroll", "Status 200"):
			t.Fatalf("no successful simplereenroll in the server's log:\n%s", r.srv.Log())
		}
	})
	t.Run("server down: retries and keeps the old certificate", func(t *testing.T) {
		t.Parallel()
		r := newRenewalRig(t)
		old := r.enrollDevice(t)
		oldKey := r.key(t, "est-id")
		r.srv.Stop()
		half := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2)
		// Past the threshold and two retry periods (4.8 s each).
		time.Sleep(time.Until(half.Add(11 * time.Second)))
		now := r.identity(t)
		switch {
		case now.SerialNumber.Cmp(old.SerialNumber) != 0:
			t.Fatal("the identity changed while the server was down")
		case !samePub(r.key(t, "est-id"), oldKey):
			t.Fatal("the key changed while the server was down")
		case r.key(t, "est-id-temp") != nil:
			t.Fatal("est-id-temp left behind by a failed renewal")
		case !time.Now().Before(now.NotAfter):
			t.Fatal("the old identity is no longer valid")
		}
		if err := r.srv.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, time.Now().Add(20*time.Second), "a retry to renew once the server is back", func() bool {
			return r.identity(t).SerialNumber.Cmp(old.SerialNumber) != 0
		})
		if renewed := r.identity(t); !samePub(r.key(t, "est-id"), renewed.PublicKey) || samePub(renewed.PublicKey, oldKey) {
			t.Fatal("after the retry the identity is not for the rotated est-id key")
		}
	})
}

// served reports whether a line of the EST server's log has both parts.
func served(log, op, status string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, op) && strings.Contains(line, status) {
			return true
		}
	}
	return false
}
