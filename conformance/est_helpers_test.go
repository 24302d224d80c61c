package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
)

// The EST module, built once per run as v1 and v2 (another User-Agent
// version, another digest) for the swap test.
var (
	estModOnce sync.Once
	estModDir  string
	estModErr  error
)

func estModule(t *testing.T, version string) string {
	t.Helper()
	estModOnce.Do(func() {
		estModDir, estModErr = os.MkdirTemp("", "warden-conf-est-")
		if estModErr != nil {
			return
		}
		os.Chmod(estModDir, 0o755)
		for _, v := range []string{"v1", "v2"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+v,
				"-o", filepath.Join(estModDir, "est-"+v+".wasm"), "../wasm-modules/est")
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				estModErr = fmt.Errorf("build the EST module %s: %v\n%s", v, err, out)
				return
			}
		}
	})
	if estModErr != nil {
		t.Fatal(estModErr)
	}
	return filepath.Join(estModDir, "est-"+version+".wasm")
}

// bootstrap is a bootstrap CA and a bootstrap certificate with its key,
// written as PEM files for the EST server (-client-ca) and the config.
type bootstrap struct {
	caFile, certFile, keyFile string
}

func newBootstrap(t *testing.T, dir string) *bootstrap {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Warden bootstrap CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bootstrap device"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	b := &bootstrap{caFile: filepath.Join(dir, "boot-ca.pem"), certFile: filepath.Join(dir, "boot.pem"), keyFile: filepath.Join(dir, "boot.key")}
	os.WriteFile(b.caFile, certs.EncodePEM(caDER), 0o644)
	os.WriteFile(b.certFile, certs.EncodePEM(leafDER), 0o644)
	os.WriteFile(b.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return b
}

// estModuleConfig is the [warden.modules.est] table for the module file
// path (pinned by digest), allowed to reach srv.
func estModuleConfig(t *testing.T, path string, srv *estpeer.Server) string {
	return fmt.Sprintf(`
[warden.modules.est]
path = %q
sha256 = %q
egress = [%q]
timeout = "30s"
`, path, fileSHA256(t, path), srv.Addr)
}

// leafOf parses the first certificate of a PEM chain.
func leafOf(t *testing.T, chain string) *x509.Certificate {
	t.Helper()
	cs, err := certs.ParseChain([]byte(chain))
	if err != nil {
		t.Fatalf("%v: %q", err, chain)
	}
	return cs[0]
}

// waitUntil polls cond every 100 ms until it holds, failing the test at
// the deadline.
func waitUntil(t *testing.T, deadline time.Time, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// moduleStatus returns GET /modules' entry for name.
func moduleStatus(t *testing.T, d *daemon, name string) map[string]any {
	t.Helper()
	r := do(t, request{Socket: d.socket("broker"), Method: "GET", Target: "/modules?api-version=2026-12-01"})
	if r.Status != 200 {
		t.Fatalf("GET /modules: %d %s", r.Status, r.Body)
	}
	var list []map[string]any
	if err := json.Unmarshal(r.Body, &list); err != nil {
		var wrapped struct {
			Modules []map[string]any `json:"modules"`
		}
		if err := json.Unmarshal(r.Body, &wrapped); err != nil {
			t.Fatalf("GET /modules: %s", r.Body)
		}
		list = wrapped.Modules
	}
	for _, m := range list {
		if m["name"] == name {
			return m
		}
	}
	t.Fatalf("module %s not listed: %s", name, r.Body)
	return nil
}
