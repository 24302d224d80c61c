package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a CA that issues client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func (ca *testCA) issue(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestX509: a client certificate chaining to the enrollment CA registers
// with its CN, polls, and then manages its modules on the hub; another CA,
// a CN that is not the registration ID, and no certificate are refused.
func TestX509(t *testing.T) {
	em := start(t, Options{})
	ca, stranger := newTestCA(t, "enrollment CA"), newTestCA(t, "stranger")
	if err := em.AddX509Enrollment(X509Enrollment{Name: "ca", CAPEM: ca.pem}); err != nil {
		t.Fatal(err)
	}
	good := em.Client(ca.issue(t, "x-dev"))
	r, _ := provision(t, em, good, "x-dev", "", nil)
	if r.body["status"] != "assigned" || state(r)["deviceId"] != "x-dev" {
		t.Fatalf("x509: %s", r.raw)
	}
	for name, c := range map[string]*tlsClient{
		"other CA":     {em.Client(stranger.issue(t, "x-dev")), "x-dev"},
		"CN mismatch":  {good, "y-dev"},
		"no cert":      {em.Client(), "x-dev"},
		"cert + wrong": {em.Client(ca.issue(t, "z-dev")), "x-dev"},
	} {
		if r := call(t, c.c, "PUT", regURL(em, c.id), "", map[string]any{"registrationId": c.id}); r.status != 401 {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	if r := call(t, good, "PUT", modURL(em, "x-dev", "m"), "", map[string]any{"moduleId": "m"}); r.status != 200 {
		t.Fatalf("hub with the cert: %d %s", r.status, r.raw)
	}
	if r := call(t, em.Client(ca.issue(t, "other")), "GET", modURL(em, "x-dev", ""), "", nil); r.status != 401 {
		t.Fatalf("hub with another device's cert: %d", r.status)
	}
}

type tlsClient struct {
	c  *http.Client
	id string
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestTPM: the 401 challenge carries an activation blob for the device's
// EK and SRK; a SAS signed with the activated key registers; the assigned
// state carries a fresh hub key (or none with TPMSameHubKey).
func TestTPM(t *testing.T) {
	for _, same := range []bool{false, true} {
		em := start(t, Options{TPMSameHubKey: same})
		_, _, ek := testKey(t)
		_, _, srk := testKey(t)
		_, _, otherEK := testKey(t)
		ekB64 := base64.StdEncoding.EncodeToString(ek)
		if err := em.AddTPMEnrollment(TPMEnrollment{RegistrationID: "tpm-dev", EndorsementKey: ekB64}); err != nil {
			t.Fatal(err)
		}
		c := em.Client()
		body := func(ek []byte) map[string]any {
			return map[string]any{"registrationId": "tpm-dev", "tpm": map[string]any{
				"endorsementKey": base64.StdEncoding.EncodeToString(ek), "storageRootKey": base64.StdEncoding.EncodeToString(srk)}}
		}
		if r := call(t, c, "PUT", regURL(em, "tpm-dev"), "", body(otherEK)); r.status != 401 || r.body["authenticationKey"] != nil {
			t.Fatalf("other EK: %d %s", r.status, r.raw)
		}
		if r := call(t, c, "PUT", regURL(em, "tpm-dev"), dpsSAS(t, em, "tpm-dev", NewKey()), body(ek)); r.status != 401 {
			t.Fatalf("SAS before the challenge: %d", r.status)
		}
		r := call(t, c, "PUT", regURL(em, "tpm-dev"), "", body(ek))
		blob, _ := base64.StdEncoding.DecodeString(r.body["authenticationKey"].(string))
		if r.status != 401 || r.body["keyName"] != "registration" || len(blob) < 500 || r.body["status"] != nil {
			t.Fatalf("challenge: %d %s", r.status, r.raw)
		}
		em.mu.Lock()
		key := em.challenges["tpm-dev"].key // what the TPM recovers from blob
		em.mu.Unlock()
		r, _ = provision(t, em, c, "tpm-dev", dpsSAS(t, em, "tpm-dev", key), nil)
		st := state(r)
		tpm, _ := st["tpm"].(map[string]any)
		if r.body["status"] != "assigned" || (tpm == nil) != same {
			t.Fatalf("same=%v: %s", same, r.raw)
		}
		dev := em.Devices()[0]
		if dev.Attestation != "tpm" || (dev.PrimaryKey == key) != same {
			t.Fatalf("same=%v: hub key %+v", same, dev)
		}
	}
}

// TestEnrollmentsFile: JSON and TOML files load every kind of enrollment.
func TestEnrollmentsFile(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "file CA")
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(ca.pem), 0o600)
	key := NewKey()
	files := map[string]string{
		"e.json": `{"symmetricKey":[{"registrationId":"s1","primaryKey":"` + key + `","payload":{"a":1},"assignAfterPolls":1}],
			"groups":[{"name":"g","primaryKey":"` + key + `","iotHub":"h.example"}],
			"x509":[{"name":"x","caFile":"ca.pem"}],
			"tpm":[{"registrationId":"t1"}],
			"hubDevices":[{"deviceId":"manual","primaryKey":"` + key + `"}]}`,
		"e.toml": `[[symmetricKey]]
registrationId = "s1"
primaryKey = "` + key + `"
assignAfterPolls = 1
payload = { a = 1 }

[[groups]]
name = "g"
primaryKey = "` + key + `"
iotHub = "h.example"

[[x509]]
name = "x"
caFile = "ca.pem"

[[tpm]]
registrationId = "t1"

[[hubDevices]]
deviceId = "manual"
primaryKey = "` + key + `"
`,
		"bad.json": `{"symetricKey":[]}`,
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o600)
		en, err := ReadEnrollments(p)
		if name == "bad.json" {
			if err == nil {
				t.Errorf("bad.json accepted")
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		em := start(t, Options{})
		if err := em.Load(en); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(em.individual) != 1 || len(em.groups) != 1 || len(em.x509s) != 1 || len(em.tpms) != 1 || len(em.Devices()) != 1 {
			t.Fatalf("%s: loaded %+v", name, en)
		}
		r, polls := provision(t, em, em.Client(), "s1", dpsSAS(t, em, "s1", key), nil)
		if polls != 2 || string(mustJSON(state(r)["payload"])) != `{"a":1}` {
			t.Errorf("%s: %d polls, %s", name, polls, r.raw)
		}
	}
}
