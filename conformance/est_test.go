package conformance

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	clientcertd "github.com/warden-iot/warden/client/certd"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
)

// TestESTEnroll: C1 with method "est" through wardend, its EST module and
// the real GlobalSign EST server: HTTP Basic (the harness enforces the
// password), a bootstrap client certificate that obtains the EST identity
// which then authenticates the next enrollment, and a deferred (202 +
// Retry-After) enrollment. The chains verify with openssl against the EST
// CA.
func TestESTEnroll(t *testing.T) {
	openssl := needOpenSSL(t)
	dir := newDir(t)
	boot := newBootstrap(t, dir)
	srv := estpeer.Start(t, estpeer.Options{Dir: filepath.Join(dir, "est"), ClientCAs: []string{boot.caFile}})
	d := startDaemon(t, estModuleConfig(t, estModule(t, "v1"), srv)+fmt.Sprintf(`
[cert_issuance.est]
trusted_certs = ["file://%[1]s"]

[cert_issuance.est.urls]
default = %[2]q

[cert_issuance.est-basic]
method = "est"
url = %[2]q
username = "estuser"
password = "estpwd"

[cert_issuance.est-badpw]
method = "est"
url = %[2]q
username = "estuser"
password = "wrong"

[cert_issuance.est-deferred]
method = "est"
url = %[3]q

[cert_issuance.est-tls]
method = "est"
url = %[4]q
bootstrap_identity_cert = "file://%[5]s"
bootstrap_identity_pk = "file://%[6]s"
`, srv.CAFile(), srv.URL("basic"), srv.URL("defer"), srv.URL("tls"), boot.certFile, boot.keyFile))
	ctx := context.Background()
	c := clientcertd.New(d.socket("certd"))
	defer c.Close()
	signer, _ := storeSigner(t, d, "est-device")
	verify := func(t *testing.T, chain string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "leaf.pem")
		os.WriteFile(p, []byte(strings.SplitAfterN(chain, "-----END CERTIFICATE-----\n", 2)[0]), 0o644)
		out, err := exec.Command(openssl, "verify", "-CAfile", srv.CAFile(), "-purpose", "sslclient", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl verify: %v\n%s", err, out)
		}
	}

	t.Run("basic auth", func(t *testing.T) {
		chain, err := c.Create(ctx, "est-basic", makeCSR(t, signer, "est-basic-device"), nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, srv.Log())
		}
		verify(t, chain)
		cs, _ := certs.ParseChain([]byte(chain))
		if len(cs) != 2 || cs[0].Subject.CommonName != "est-basic-device" || cs[1].Subject.CommonName != "Warden test EST CA" {
			t.Fatalf("chain %d certs, %v", len(cs), cs[0].Subject)
		}
		if got, _ := c.Get(ctx, "est-basic"); got != chain {
			t.Fatal("stored chain differs")
		}
	})
	t.Run("wrong password is refused", func(t *testing.T) {
		_, err := c.Create(ctx, "est-badpw", makeCSR(t, signer, "x"), nil)
		if err == nil || !strings.Contains(err.Error(), "500") {
			t.Fatalf("want 500 internal error, got %v", err)
		}
		if last := moduleStatus(t, d, "est")["lastJob"].(map[string]any); last["ok"] != false || !strings.Contains(fmt.Sprint(last["error"]), "401") {
			t.Fatalf("last job %v", last)
		}
	})
	t.Run("deferred", func(t *testing.T) {
		start := time.Now()
		chain, err := c.Create(ctx, "est-deferred", makeCSR(t, signer, "deferred-device"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) < time.Second {
			t.Fatalf("answered in %s: the Retry-After was not waited out", time.Since(start))
		}
		verify(t, chain)
	})
	t.Run("bootstrap certificate, then the enrolled identity", func(t *testing.T) {
		chain, err := c.Create(ctx, "est-tls", makeCSR(t, signer, "tls-device"), nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, srv.Log())
		}
		verify(t, chain)
		idChain, err := c.Get(ctx, "est-id-est-tls")
		if err != nil {
			t.Fatalf("the identity was not stored: %v", err)
		}
		id := leafOf(t, idChain)
		idKey, _ := storeSigner(t, d, "est-id-est-tls")
		if !samePub(id.PublicKey, idKey.Public()) || id.Subject.CommonName != "tls-device" {
			t.Fatalf("identity %v is not for key est-id-est-tls", id.Subject)
		}
		verify(t, idChain)
		// Without the bootstrap certificate (C4 deletes the preloaded file),
		// the identity alone authenticates the next enrollment.
		if err := c.Delete(ctx, "est-bootstrap-id-est-tls"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(boot.certFile); !os.IsNotExist(err) {
			t.Fatalf("bootstrap file still there: %v", err)
		}
		if _, err := c.Create(ctx, "est-tls", makeCSR(t, signer, "tls-device"), nil); err != nil {
			t.Fatalf("enrollment with the identity: %v\n%s", err, srv.Log())
		}
		if again, _ := c.Get(ctx, "est-id-est-tls"); again != idChain {
			t.Fatal("the identity was enrolled again")
		}
	})
}

func samePub(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// TestESTModuleSwap: replacing the EST module's file (and its signature)
// and reloading takes effect on the next job, without a restart.
func TestESTModuleSwap(t *testing.T) {
	dir := newDir(t)
	srv := estpeer.Start(t, estpeer.Options{Dir: filepath.Join(dir, "est")})
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	modPath := filepath.Join(dir, "est.wasm")
	install := func(v string) string {
		b, err := os.ReadFile(estModule(t, v))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(modPath+".tmp", b, 0o644)
		os.Rename(modPath+".tmp", modPath)
		os.WriteFile(modPath+".sig", []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(priv, b))), 0o644)
		return "sha256:" + fileSHA256(t, modPath)
	}
	d1 := install("v1")
	d := startDaemon(t, fmt.Sprintf(`
[warden.modules.est]
path = %q
signature = %q
trusted_keys = [%q]
egress = [%q]
timeout = "30s"

[cert_issuance.est]
trusted_certs = ["file://%s"]

[cert_issuance.swapped]
method = "est"
url = %q
username = "estuser"
password = "estpwd"
`, modPath, modPath+".sig", base64.StdEncoding.EncodeToString(pub), srv.Addr, srv.CAFile(), srv.URL("basic")))
	c := clientcertd.New(d.socket("certd"))
	defer c.Close()
	signer, _ := storeSigner(t, d, "swap-key")
	enroll := func() string {
		t.Helper()
		if _, err := c.Create(context.Background(), "swapped", makeCSR(t, signer, "swap"), nil); err != nil {
			t.Fatal(err)
		}
		last := moduleStatus(t, d, "est")["lastJob"].(map[string]any)
		return fmt.Sprint(last["digest"])
	}
	if got := enroll(); got != d1 {
		t.Fatalf("first job ran %s, want %s", got, d1)
	}
	d2 := install("v2")
	if d1 == d2 {
		t.Fatal("v1 and v2 have the same digest")
	}
	r := do(t, request{Socket: d.socket("broker"), Method: "POST", Target: "/modules/reload?api-version=2026-12-01"})
	if r.Status != 200 {
		t.Fatalf("reload: %d %s", r.Status, r.Body)
	}
	if got := enroll(); got != d2 {
		t.Fatalf("the job after the swap ran %s, want %s", got, d2)
	}
}
