package certd

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/certs"
)

// loadConfig loads TOML after a [warden] table.
func loadConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte("[warden]\nstate_dir = \"/tmp/x\"\n"+extra), 0o600)
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestResolve: super-config URIs get aziot's `config apply` IDs
// (aziot-api §9.3, §9.5 (d), (e), (k)) and EST options resolve URLs,
// credentials and renewal.
func TestResolve(t *testing.T) {
	cases := []struct {
		name  string
		toml  string
		check func(t *testing.T, s *settings)
	}{
		{"(d) DPS x509 by EST with a bootstrap cert and auto-renew", `
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "0ab1234C5D6"
[provisioning.attestation]
method = "x509"
registration_id = "my-device"
[provisioning.attestation.identity_cert]
method = "est"
url = "https://example.org/.well-known/est"
bootstrap_identity_cert = "file:///var/secrets/est-bootstrap-id.pem"
bootstrap_identity_pk = "file:///var/secrets/est-bootstrap-id-key.pem"
[provisioning.attestation.identity_cert.subject]
L = "AQ"
ST = "Antarctica"
CN = "my-device"
[provisioning.attestation.identity_cert.auto_renew]
rotate_key = false
threshold = "50%"
retry = "10%"
[cert_issuance.est]
trusted_certs = ["file:///var/secrets/est-id-ca.pem"]
`, func(t *testing.T, s *settings) {
			o := s.opts[DeviceID]
			want := estAuth{identityCert: "est-id-device-id", identityKey: "est-id-device-id",
				bootstrapCert: "est-bootstrap-id-device-id", bootstrapKey: "est-bootstrap-id-device-id"}
			if o.method != "est" || o.url != "https://example.org/.well-known/est" || o.auth != want || o.subject["CN"] != "my-device" {
				t.Fatalf("device-id options %+v", o)
			}
			if !reflect.DeepEqual(s.opts[DeviceID+"-temp"], o) {
				t.Fatal("device-id-temp is not a copy of device-id")
			}
			if s.preloadedKeys["est-bootstrap-id-device-id"] != "file:///var/secrets/est-bootstrap-id-key.pem" ||
				s.preloadedCerts["est-bootstrap-id-device-id"].Path != "/var/secrets/est-bootstrap-id.pem" ||
				s.preloadedCerts["est-server-ca-1"].Path != "/var/secrets/est-id-ca.pem" || !reflect.DeepEqual(s.trusted, []string{"est-server-ca-1"}) {
				t.Fatalf("preloaded %v %v", s.preloadedKeys, s.preloadedCerts)
			}
			if r := s.renew[DeviceID]; r.policy != (certs.RenewalPolicy{Threshold: certs.Period{Percent: 50}, Retry: certs.Period{Percent: 10}}) || r.estIdentity {
				t.Fatalf("device-id renewal %+v", r)
			}
			if r := s.renew["est-id-device-id"]; !r.estIdentity || r.policy != certs.DefaultRenewalPolicy || r.url != o.url {
				t.Fatalf("identity renewal %+v", r)
			}
		}},
		{"(e) local CA in PKCS#11", `
[aziot_keys]
pkcs11_lib_path = "/usr/lib/libmypkcs11.so"
[cert_issuance.local_ca]
cert = "file:///var/secrets/local-ca.pem"
pk = "pkcs11:slot-id=0;object=local-ca?pin-value=1234"
`, func(t *testing.T, s *settings) {
			if s.localCACert != LocalCAID || s.localCAKey != LocalCAID || s.preloadedCerts[LocalCAID].Path != "/var/secrets/local-ca.pem" ||
				s.preloadedKeys[LocalCAID] != "pkcs11:slot-id=0;object=local-ca?pin-value=1234" {
				t.Fatalf("%+v", s)
			}
		}},
		{"(k) global EST identity and basic auth, explicit preload wins", `
[cert_issuance.est]
trusted_certs = ["file:///var/secrets/est-id-ca.pem", "ca-by-id"]
[cert_issuance.est.auth]
username = "estuser"
password = "estpwd"
identity_cert = "file:///var/secrets/est-id.pem"
identity_pk = "file:///var/secrets/est-id.key"
[cert_issuance.est.urls]
default = "https://example.org/.well-known/est"
device-id = "https://example.org/.well-known/est/dev"
[cert_issuance.device-id]
method = "est"
[cert_issuance.other]
method = "est"
url = "https://other.example/.well-known/est"
username = "u2"
password = "p2"
[preloaded_keys]
est-id = "file:///elsewhere/est-id.key"
`, func(t *testing.T, s *settings) {
			global := estAuth{username: "estuser", password: "estpwd", identityCert: "est-id", identityKey: "est-id"}
			if o := s.opts[DeviceID]; o.auth != global || o.url != "https://example.org/.well-known/est/dev" {
				t.Fatalf("device-id %+v", o)
			}
			if o := s.opts["other"]; o.auth != (estAuth{username: "u2", password: "p2"}) || o.url != "https://other.example/.well-known/est" {
				t.Fatalf("per-cert credentials do not replace the global ones: %+v", o)
			}
			if s.preloadedKeys["est-id"] != "file:///elsewhere/est-id.key" {
				t.Fatal("an explicit [preloaded_keys] entry lost")
			}
			if !reflect.DeepEqual(s.trusted, []string{"est-server-ca-1", "ca-by-id"}) {
				t.Fatalf("trusted %v", s.trusted)
			}
			if r := s.renew["est-id"]; !r.estIdentity || r.url != "https://example.org/.well-known/est/dev" {
				t.Fatalf("identity renewal %+v", r)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, resolve(loadConfig(t, tc.toml))) })
	}
}
