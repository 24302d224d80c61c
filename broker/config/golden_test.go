package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestGolden loads the aziot super-config examples of spec/aziot-api.md
// §9.2/§9.5 (and certd's own form of [cert_issuance]) and checks what they
// say.
func TestGolden(t *testing.T) {
	cases := map[string]func(t *testing.T, c *Config){
		"manual-connection-string.toml": func(t *testing.T, c *Config) {
			if !c.PreferModuleIdentityCache || c.Provisioning.Source != "manual" || c.Provisioning.ConnectionString == "" {
				t.Errorf("%+v", c.Provisioning)
			}
		},
		"manual-symmetric-key.toml": func(t *testing.T, c *Config) {
			k, err := c.Provisioning.Authentication.DeviceIDPK.Bytes()
			if err != nil || string(k) != "aziot-identity-service|aziot-ide" {
				t.Errorf("key %q, %v", k, err)
			}
		},
		"manual-symmetric-key-uri.toml": func(t *testing.T, c *Config) {
			if u := c.Provisioning.Authentication.DeviceIDPK.URI; u != "file:///var/secrets/device-id.key" {
				t.Errorf("uri %q", u)
			}
		},
		"manual-x509.toml": func(t *testing.T, c *Config) {
			a := c.Provisioning.Authentication
			if a.Method != "x509" || a.IdentityCert.Ref != "file:///var/secrets/device-id.pem" || a.IdentityCert.Issued != nil ||
				a.IdentityPK != "file:///var/secrets/device-id.key.pem" {
				t.Errorf("%+v", a)
			}
		},
		"manual-x509-est-custom.toml": func(t *testing.T, c *Config) {
			is := c.Provisioning.Authentication.IdentityCert.Issued
			if is.Method != "est" || is.ExpiryDays != 365 || is.CommonName != "my-device" || is.Username != "estuser" ||
				is.IdentityPK != "pkcs11:slot-id=0;object=est-id?pin-value=1234" {
				t.Errorf("%+v", is)
			}
		},
		"dps-symmetric-key.toml": func(t *testing.T, c *Config) {
			p := c.Provisioning
			if p.Source != "dps" || p.IDScope != "0ab1234C5D6" || p.Attestation.RegistrationID.Name != "my-device" {
				t.Errorf("%+v", p)
			}
		},
		"dps-symmetric-key-no-pad.toml": func(t *testing.T, c *Config) {
			k, err := c.Provisioning.Attestation.SymmetricKey.Bytes()
			if err != nil || len(k) != 64 {
				t.Errorf("key %d bytes, %v", len(k), err)
			}
		},
		"dps-tpm.toml": func(t *testing.T, c *Config) {
			want := TPM{TCTI: "device:/dev/tpmrm0", AuthKeyIndex: 0x100,
				HierarchyAuthorization: HierarchyAuthorization{Endorsement: "hello", Owner: "world"}}
			if c.TPM != want || c.Provisioning.Attestation.Method != "tpm" {
				t.Errorf("%+v", c.TPM)
			}
		},
		"dps-x509.toml": func(t *testing.T, c *Config) {
			if a := c.Provisioning.Attestation; a.IdentityCert.Ref == "" || a.IdentityPK == "" {
				t.Errorf("%+v", a)
			}
		},
		"dps-x509-est-bootstrap-auto-renew.toml": func(t *testing.T, c *Config) {
			is := c.Provisioning.Attestation.IdentityCert.Issued
			wantSubject := map[string]string{"CN": "my-device", "L": "AQ", "ST": "Antarctica"}
			wantRenew := &AutoRenew{RotateKey: false, Threshold: RenewalPolicy{Percent: 50}, Retry: RenewalPolicy{Percent: 10}}
			if !reflect.DeepEqual(is.Subject, wantSubject) || !reflect.DeepEqual(is.AutoRenew, wantRenew) ||
				is.BootstrapIdentityPK != "file:///var/secrets/est-bootstrap-id-key.pem" {
				t.Errorf("%+v %+v", is, is.AutoRenew)
			}
			if got := c.CertIssuance.EST.TrustedCerts; len(got) != 1 {
				t.Errorf("trusted_certs %v", got)
			}
		},
		"dps-x509-pkcs11-localca.toml": func(t *testing.T, c *Config) {
			ca := c.CertIssuance.LocalCA
			if ca.Cert.Ref != "file:///var/secrets/local-ca.pem" || ca.PK == "" ||
				c.Provisioning.Attestation.IdentityCert.Issued.Method != "local_ca" {
				t.Errorf("%+v", ca)
			}
		},
		"dps-x509-pkcs11-est.toml": func(t *testing.T, c *Config) {
			e := c.CertIssuance.EST
			if e.Auth.Username != "estuser" || e.Auth.IdentityCert != "file:///var/secrets/est-id.pem" ||
				e.URLs["default"] != "https://example.org/.well-known/est" {
				t.Errorf("%+v", e)
			}
			// identity_auto_renew of EST is always on, with aziot's defaults.
			if r := e.IdentityAutoRenew; !r.RotateKey || r.Threshold.Percent != 80 || r.Retry.Percent != 4 {
				t.Errorf("identity_auto_renew %+v", r)
			}
		},
		"local-gateway.toml": func(t *testing.T, c *Config) {
			if c.LocalGatewayHostname != "my-gateway-device" || c.Hostname != "my-device" {
				t.Errorf("%q %q", c.LocalGatewayHostname, c.Hostname)
			}
		},
		"throttle-limits.toml": func(t *testing.T, c *Config) {
			for svc, n := range map[string]int{"keyd": 20, "certd": 30, "tpmd": 40, "identityd": 50, "broker": 10} {
				if got := c.MaxRequests(svc); got != n {
					t.Errorf("MaxRequests(%s) = %d, want %d", svc, got, n)
				}
			}
		},
		"local-identities.toml": func(t *testing.T, c *Config) {
			if c.LocalID.Domain != "example.com" || len(c.Principals) != 3 {
				t.Fatalf("%+v %+v", c.LocalID, c.Principals)
			}
			if l := c.Principals[1].LocalID; l == nil || *l != (PrincipalLocalID{Type: "x509", Attributes: "server"}) {
				t.Errorf("localid %+v", l)
			}
			if c.Principals[0].IDType != nil || !c.Principals[2].HasIDType("local") {
				t.Errorf("idtype %v %v", c.Principals[0].IDType, c.Principals[2].IDType)
			}
			if ca := c.CertIssuance.LocalCA.Cert.Issued; ca.Method != "self_signed" || ca.ExpiryDays != 3650 {
				t.Errorf("local_ca %+v", ca)
			}
			if o := c.CertIssuance.Certs["hostprocess3"]; o.ExpiryDays != DefaultExpiryDays || o.Subject["O"] != "Example" {
				t.Errorf("hostprocess3 %+v", o)
			}
		},
		"certd-est-flattened.toml": func(t *testing.T, c *Config) {
			want := ESTAuth{Username: "estuser", Password: "estpwd", IdentityCert: "est-id", IdentityPK: "est-id",
				BootstrapIdentityCert: "est-bootstrap-id", BootstrapIdentityPK: "est-bootstrap-id"}
			if c.CertIssuance.EST.Auth != want {
				t.Errorf("auth %+v", c.CertIssuance.EST.Auth)
			}
			if b := c.PreloadedCerts["trust-bundle"]; !reflect.DeepEqual(b.Bundle, []string{"est-server-ca-1"}) {
				t.Errorf("bundle %+v", b)
			}
			if d := c.CertIssuance.Certs["device-id"]; d.Method != "est" || d.URL == "" {
				t.Errorf("device-id %+v", d)
			}
			if p := c.Principals[0]; p.UID != 5556 || len(p.Keys) != 2 || len(p.Certs) != 1 {
				t.Errorf("principal %+v", p)
			}
		},
		"warden-full.toml": func(t *testing.T, c *Config) {
			w := c.Warden
			if w.BrokerSocket != "/run/warden/control.sock" || c.SocketPath("broker") != w.BrokerSocket || w.SocketGroup != "warden" {
				t.Errorf("%+v", w)
			}
			if !w.Policy.DecisionLogFailClosed || w.Tokens.DefaultTTL.Duration != 5*time.Minute {
				t.Errorf("%+v %+v", w.Policy, w.Tokens)
			}
			dps := w.Modules["dps"]
			if dps.Timeout.Duration != 2*time.Minute || dps.MemoryLimitMB != 64 || len(dps.Egress) != 2 ||
				dps.MaxHostCalls != 500 || dps.MaxOutputBytes != 65536 {
				t.Errorf("dps %+v", dps)
			}
			if est := w.Modules["est"]; len(est.TrustedKeys) != 2 {
				t.Errorf("est %+v", est)
			}
		},
	}
	files, _ := filepath.Glob("testdata/golden/*.toml")
	if len(files) != len(cases) {
		t.Errorf("%d golden files, %d checks", len(files), len(cases))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := LoadFiles(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			check := cases[filepath.Base(f)]
			if check == nil {
				t.Fatal("no check for this file")
			}
			check(t, c)
		})
	}
}

// TestGoldenAsDropIns: the golden files also load as drop-ins of an empty
// base, and all of them together merge (except where they contradict).
func TestGoldenAsDropIn(t *testing.T) {
	base := writeConfig(t, "", nil)
	c, err := LoadFiles(base, []string{"testdata/golden/dps-tpm.toml", "testdata/golden/warden-full.toml"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Provisioning.Attestation.Method != "tpm" || c.Warden.Modules["est"].Signature == "" {
		t.Errorf("merged %+v", c)
	}
	var buf bytes.Buffer
	if err := c.Encode(&buf); err != nil {
		t.Fatal(err)
	}
}

// TestDocExample: the example of docs/config.md (a base file and a drop-in)
// loads.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(doc), "\n## Example\n")
	if !ok {
		t.Fatal("docs/config.md has no Example section")
	}
	var blocks []string
	for _, part := range strings.Split(example, "```toml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		blocks = append(blocks, block)
	}
	if len(blocks) != 2 {
		t.Fatalf("%d toml blocks in the example, want 2", len(blocks))
	}
	c, err := Load(writeConfig(t, blocks[0], map[string]string{"aziot-edged-principal.toml": blocks[1]}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Principals) != 1 || c.Warden.Modules["dps"].Path == "" || c.Provisioning.Attestation.IdentityCert.Issued == nil {
		t.Errorf("example loaded as %+v", c)
	}
}
