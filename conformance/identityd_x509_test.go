package conformance

import (
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

	"github.com/warden-iot/warden/conformance/emulator"
)

// TestIdentityDPSX509: wardend provisions with X.509 attestation, the
// identity certificate and key given as file URIs (preloaded as device-id)
// and no registration_id (the certificate's CN); TLS client authentication
// is done by the host with the key in the key store.
func TestIdentityDPSX509(t *testing.T) {
	needRoot(t)
	r := newIdentityRig(t)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Warden conformance device CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := r.emu.AddX509Enrollment(emulator.X509Enrollment{Name: "conf-x509", CAPEM: string(caPEM)}); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "conf-x509-dev"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := newDir(t)
	certPath, keyPath := filepath.Join(dir, "device.pem"), filepath.Join(dir, "device.key.pem")
	os.WriteFile(certPath, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...), 0o644)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	extra := r.modulesAndTrust() + `
[provisioning]
source = "dps"
global_endpoint = "` + r.emu.URL() + `"
id_scope = "` + r.emu.IDScope() + `"

[provisioning.attestation]
method = "x509"
identity_cert = "file://` + certPath + `"
identity_pk = "file://` + keyPath + `"
`
	d := startDaemon(t, extra)
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
	if resp.Status != 200 || json.Unmarshal(resp.Body, &dev) != nil || dev.Spec.DeviceID != "conf-x509-dev" ||
		dev.Spec.Auth.Type != "x509" || dev.Spec.Auth.CertID != "device-id" || dev.Spec.Auth.KeyHandle == "" {
		t.Fatalf("I2 = %d %s", resp.Status, resp.Body)
	}
	if got := d.hubModules(r.emu, dev.Spec.HubName, "conf-x509-dev"); !slices.Equal(got, []string{"agent-b"}) {
		t.Fatalf("hub modules = %v", got)
	}
	resp = do(t, request{Socket: d.socket("identityd"), Method: "GET", Target: "/identities/provisioning?api-version=2021-12-01"})
	if want := `{"source":"dps","auth":"x509","endpoint":"` + r.emu.URL() + `","scope_id":"` + r.emu.IDScope() +
		`","registration_id":"conf-x509-dev","payload":null}`; resp.Status != 200 || string(resp.Body) != want {
		t.Fatalf("I4 = %d %s\nwant %s", resp.Status, resp.Body, want)
	}
}
