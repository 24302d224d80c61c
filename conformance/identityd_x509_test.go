package conformance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/warden-iot/warden/client/keyd"
	"github.com/warden-iot/warden/conformance/emulator"
)

// TestIdentityDPSX509: wardend provisions with X.509 attestation, the
// identity certificate and key given as file URIs (preloaded as device-id)
// and no registration_id (the certificate's CN); TLS client authentication
// is done by the host with the key in the key store.
func TestIdentityDPSX509(t *testing.T) {
	needRoot(t)
	r := newIdentityRig(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain := r.x509Enrollment(t, "conf-x509-dev", &key.PublicKey)
	dir := newDir(t)
	certPath, keyPath := filepath.Join(dir, "device.pem"), filepath.Join(dir, "device.key.pem")
	os.WriteFile(certPath, chain, 0o644)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	d := startDaemon(t, r.x509Config("file://"+certPath, "file://"+keyPath))
	d.checkX509Device(t, r, "conf-x509-dev", true)
}

// TestIdentityDPSX509SoftHSM: the same with the identity key pair created
// by keyd in a SoftHSM token (the key never leaves the token; the host's
// TLS signs through PKCS#11).
func TestIdentityDPSX509SoftHSM(t *testing.T) {
	needRoot(t)
	hsm := newSoftHSM(t)
	r := newIdentityRig(t)
	d := startDaemonEnv(t, hsm.config(), hsm.env())
	ctx := context.Background()
	k := keyd.New(d.socket("keyd"))
	h, err := k.CreateKeyPairIfNotExists(ctx, "device-id", "ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey(ctx, h)
	k.Close()
	if err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(d.dir, "device.pem")
	os.WriteFile(certPath, r.x509Enrollment(t, "conf-hsm-dev", pub), 0o644)
	if err := os.WriteFile(d.cfgPath, []byte(baseConfig(d.dir)+hsm.config()+r.x509Config("file://"+certPath, "device-id")), 0o600); err != nil {
		t.Fatal(err)
	}
	d.restart()
	d.checkX509Device(t, r, "conf-hsm-dev", false)
}

// x509Enrollment adds an X.509 enrollment for a new CA and returns the PEM
// chain of a client certificate with CN cn for pub.
func (r *identityRig) x509Enrollment(t *testing.T, cn string, pub any) []byte {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Warden conformance device CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := r.emu.AddX509Enrollment(emulator.X509Enrollment{Name: "ca-" + cn, CAPEM: string(caPEM)}); err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...)
}

// x509Config provisions with X.509 attestation and no registration_id.
func (r *identityRig) x509Config(cert, pk string) string {
	return r.modulesAndTrust() + `
[provisioning]
source = "dps"
global_endpoint = "` + r.emu.URL() + `"
id_scope = "` + r.emu.IDScope() + `"

[provisioning.attestation]
method = "x509"
identity_cert = "` + cert + `"
identity_pk = "` + pk + `"
`
}

// checkX509Device checks I2, the hub's modules and (withI4) I4.
func (d *daemon) checkX509Device(t *testing.T, r *identityRig, cn string, withI4 bool) {
	t.Helper()
	resp := do(t, request{Socket: d.socket("identityd"), Method: "POST", Target: "/identities/device?api-version=2020-09-01", Body: `{"type":"aziot"}`})
	var dev struct {
		Spec struct {
			HubName  string `json:"hubName"`
			DeviceID string `json:"deviceId"`
			Auth     struct {
				Type      string `json:"type"`
				KeyHandle string `json:"keyHandle"`
				CertID    string `json:"certId"`
			} `json:"auth"`
		} `json:"spec"`
	}
	if resp.Status != 200 || json.Unmarshal(resp.Body, &dev) != nil || dev.Spec.DeviceID != cn ||
		dev.Spec.Auth.Type != "x509" || dev.Spec.Auth.CertID != "device-id" || dev.Spec.Auth.KeyHandle == "" {
		t.Fatalf("I2 = %d %s", resp.Status, resp.Body)
	}
	if got := d.hubModules(r.emu, dev.Spec.HubName, cn); !slices.Equal(got, []string{"agent-b"}) {
		t.Fatalf("hub modules = %v", got)
	}
	if !withI4 {
		return
	}
	resp = do(t, request{Socket: d.socket("identityd"), Method: "GET", Target: "/identities/provisioning?api-version=2021-12-01"})
	if want := `{"source":"dps","auth":"x509","endpoint":"` + r.emu.URL() + `","scope_id":"` + r.emu.IDScope() +
		`","registration_id":"` + cn + `","payload":null}`; resp.Status != 200 || string(resp.Body) != want {
		t.Fatalf("I4 = %d %s\nwant %s", resp.Status, resp.Body, want)
	}
}
