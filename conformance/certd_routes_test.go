package conformance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/certs"
	clientcertd "github.com/warden-iot/warden/client/certd"
	clientkeyd "github.com/warden-iot/warden/client/keyd"
)

const certdVersion = "2020-09-01"

// certdConfig: uid A may modify "a-*" and "agent/module/*"; an issued
// local CA; a self-signed and a local-CA certificate; a preloaded bundle.
const certdConfig = `
[[principal]]
uid = 1000
certs = ["a-*", "agent/module/*"]

[cert_issuance.local_ca]
cert = { method = "self_signed", common_name = "Warden Conformance CA", expiry_days = 365 }

[cert_issuance.a-ca]
method = "self_signed"
expiry_days = 30

[cert_issuance.a-leaf]
method = "local_ca"
subject = { CN = "a-leaf", O = "Warden", C = "DE" }
expiry_days = 10
`

// certdCall sends a request to certd.sock as uid (0 from this process).
func certdCall(t *testing.T, d *daemon, uid uint32, method, target, body string) response {
	t.Helper()
	req := request{Socket: d.socket("certd"), Method: method, Target: target + "?api-version=" + certdVersion}
	if body != "" {
		req.Body = body
		req.Header = map[string]string{"Content-Type": "application/json"}
	}
	if uid == 0 {
		return do(t, req)
	}
	return doAs(t, uid, req)
}

func (r response) pem() string {
	var m struct {
		PEM string `json:"pem"`
	}
	json.Unmarshal(r.Body, &m)
	return m.PEM
}

// storeSigner creates key pair id in keyd and returns a signer over keyd.sock.
func storeSigner(t *testing.T, d *daemon, id string) (crypto.Signer, string) {
	t.Helper()
	ctx := context.Background()
	k := clientkeyd.New(d.socket("keyd"))
	t.Cleanup(k.Close)
	h, err := k.CreateKeyPairIfNotExists(ctx, id, "ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.Signer(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return s, h
}

func makeCSR(t *testing.T, signer crypto.Signer, cn string, exts ...pkix.Extension) string {
	t.Helper()
	subj, _ := certs.Subject(cn, nil)
	der, err := certs.NewCSR(signer, certs.CSROptions{Subject: subj, Extensions: exts})
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func ext(t *testing.T, oid asn1.ObjectIdentifier, critical bool, v any) pkix.Extension {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oid, Critical: critical, Value: b}
}

// caExtensions are aziot-edged's CA CSR extensions.
func caExtensions(t *testing.T) []pkix.Extension {
	return []pkix.Extension{
		ext(t, asn1.ObjectIdentifier{2, 5, 29, 19}, true, struct {
			IsCA bool `asn1:"optional"`
		}{true}),
		ext(t, asn1.ObjectIdentifier{2, 5, 29, 15}, true, asn1.BitString{Bytes: []byte{0x86}, BitLength: 7}),
	}
}

// TestCertdRoutes: C1–C4 over certd.sock as root and as another uid:
// 201 on create and import, open GET, wildcard principals, IDs with "/"
// in the body and as %2F in the path, aziot's messages.
func TestCertdRoutes(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, certdConfig)
	other, _ := storeSigner(t, d, "conf-other")
	leafCSR := makeCSR(t, other, "leaf")
	create := func(id string) string {
		b, _ := json.Marshal(map[string]string{"certId": id, "csr": leafCSR})
		return string(b)
	}
	cases := []struct {
		name   string
		uid    uint32
		method string
		target string
		body   string
		status int
		msg    string
	}{
		{"create by a principal", uidA, "POST", "/certificates", create("a-leaf"), 201, ""},
		{"create refused", uidB, "POST", "/certificates", create("a-leaf"), 401, "user 1001 is not authorized to modify the cert a-leaf"},
		{"create without issuance options", 0, "POST", "/certificates", create("unconfigured"), 400, "parameter \"issuer\" has an invalid value\ncaused by: issuer is required for locally-issued certs"},
		{"import with / in the ID, %2F", uidA, "PUT", "/certificates/agent%2Fmodule%2Fm1%3Aidentity", `{"pem":"IMPORTED"}`, 201, ""},
		{"read is open", uidB, "GET", "/certificates/agent%2Fmodule%2Fm1%3Aidentity", "", 200, ""},
		{"read missing", uidB, "GET", "/certificates/nothing", "", 400, "parameter \"id\" has an invalid value\ncaused by: not found"},
		{"delete refused", uidB, "DELETE", "/certificates/a-leaf", "", 401, "user 1001 is not authorized to modify the cert a-leaf"},
		{"delete with / by glob", uidA, "DELETE", "/certificates/agent%2Fmodule%2Fm1%3Aidentity", "", 204, ""},
		{"delete missing", 0, "DELETE", "/certificates/agent%2Fmodule%2Fm1%3Aidentity", "", 204, ""},
		{"method not allowed", 0, "PATCH", "/certificates/x", "", 400, "method not allowed"},
		{"malformed JSON", 0, "POST", "/certificates", `{"certId":`, 422, ""},
		{"missing csr", 0, "POST", "/certificates", `{"certId":"x"}`, 422, "missing field `csr`"},
		{"PUT not JSON", 0, "PUT", "/certificates/x", "", 422, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := certdCall(t, d, tc.uid, tc.method, tc.target, tc.body)
			if r.Status != tc.status || (tc.msg != "" && r.message() != tc.msg) {
				t.Fatalf("%d %s, want %d %q", r.Status, r.Body, tc.status, tc.msg)
			}
		})
	}
	t.Run("create with / in the body, then read it by %2F", func(t *testing.T) {
		_, caHandle := storeSigner(t, d, "a-ca")
		caSigner, _ := storeSigner(t, d, "a-ca")
		r := certdCall(t, d, 0, "POST", "/certificates", func() string {
			b, _ := json.Marshal(map[string]string{"certId": "a-ca", "csr": makeCSR(t, caSigner, "a-ca", caExtensions(t)...)})
			return string(b)
		}())
		if r.Status != 201 {
			t.Fatalf("a-ca: %d %s", r.Status, r.Body)
		}
		c := clientcertd.New(d.socket("certd"))
		defer c.Close()
		id := "agent/module/m2:1:server"
		chain, err := c.Create(context.Background(), id, leafCSR, &clientcertd.Issuer{CertID: "a-ca", PrivateKeyHandle: caHandle})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Get(context.Background(), id)
		if err != nil || got != chain {
			t.Fatalf("read back: %v", err)
		}
	})
	t.Run("restart keeps certificates", func(t *testing.T) {
		before := certdCall(t, d, 0, "GET", "/certificates/a-leaf", "").pem()
		d.restart()
		if after := certdCall(t, d, 0, "GET", "/certificates/a-leaf", "").pem(); after == "" || after != before {
			t.Fatal("a-leaf changed or vanished across a restart")
		}
	})
}

// TestCertdChainsOpenSSL: a self-signed CA (aziot-edged's CA CSR), a leaf
// it signs by key handle, and a leaf of the local CA are accepted by
// openssl verify, with the CSR's extensions copied, SKID added and AKID =
// the issuer's SKID.
func TestCertdChainsOpenSSL(t *testing.T) {
	openssl := needOpenSSL(t)
	d := startDaemon(t, certdConfig)
	ctx := context.Background()
	c := clientcertd.New(d.socket("certd"))
	defer c.Close()
	caSigner, caHandle := storeSigner(t, d, "a-ca")
	caPEM, err := c.Create(ctx, "a-ca", makeCSR(t, caSigner, "Edge CA", caExtensions(t)...), nil)
	if err != nil {
		t.Fatal(err)
	}
	leafSigner, _ := storeSigner(t, d, "conf-leaf")
	san := ext(t, asn1.ObjectIdentifier{2, 5, 29, 17}, false, []asn1.RawValue{{Class: 2, Tag: 2, Bytes: []byte("edge.example")}})
	eku := ext(t, asn1.ObjectIdentifier{2, 5, 29, 37}, false, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}})
	custom := ext(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, false, "warden")
	leafCSR := makeCSR(t, leafSigner, "edge.example", san, eku, custom)
	byHandle, err := c.Create(ctx, "agent/module/edgehub:1:server", leafCSR, &clientcertd.Issuer{CertID: "a-ca", PrivateKeyHandle: caHandle})
	if err != nil {
		t.Fatal(err)
	}
	byLocalCA, err := c.Create(ctx, "a-leaf", leafCSR, nil)
	if err != nil {
		t.Fatal(err)
	}
	localCA, err := c.Get(ctx, "local-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	verify := func(root, leafChain, purpose string) {
		t.Helper()
		parts := strings.SplitAfterN(leafChain, "-----END CERTIFICATE-----\n", 2)
		args := []string{"verify", "-x509_strict", "-purpose", purpose, "-CAfile", write("root.pem", root)}
		if len(parts) == 2 && strings.TrimSpace(parts[1]) != "" {
			args = append(args, "-untrusted", write("untrusted.pem", parts[1]))
		}
		args = append(args, write("leaf.pem", parts[0]))
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	verify(caPEM, caPEM, "any")
	verify(caPEM, byHandle, "sslserver")
	verify(caPEM, byHandle, "sslclient")
	verify(localCA, byLocalCA, "sslserver")

	parse := func(s string) []*x509.Certificate {
		cs, err := certs.ParseChain([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ca, handleLeaf, localLeaf, local := parse(caPEM)[0], parse(byHandle), parse(byLocalCA), parse(localCA)[0]
	hasExt := func(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
		for _, e := range c.Extensions {
			if e.Id.Equal(oid) {
				return true
			}
		}
		return false
	}
	leafKeyID, _ := certs.KeyID(leafSigner.Public())
	checks := []struct {
		name string
		ok   bool
	}{
		{"CA: CA:TRUE copied, SKID, no AKID", ca.IsCA && len(ca.SubjectKeyId) == 20 && len(ca.AuthorityKeyId) == 0},
		{"by handle: chain is leaf + CA", len(handleLeaf) == 2 && bytes.Equal(handleLeaf[1].Raw, ca.Raw)},
		{"by handle: AKID = CA SKID", bytes.Equal(handleLeaf[0].AuthorityKeyId, ca.SubjectKeyId)},
		{"by handle: SKID = hash of the key", bytes.Equal(handleLeaf[0].SubjectKeyId, leafKeyID)},
		{"by handle: SAN, EKU, custom extension copied", len(handleLeaf[0].DNSNames) == 1 && len(handleLeaf[0].ExtKeyUsage) == 2 && hasExt(handleLeaf[0], asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1})},
		{"by handle: SHA-256", handleLeaf[0].SignatureAlgorithm == x509.ECDSAWithSHA256},
		{"local CA: subject override", localLeaf[0].Subject.String() == "CN=a-leaf,O=Warden,C=DE"},
		{"local CA: AKID = local CA SKID", bytes.Equal(localLeaf[0].AuthorityKeyId, local.SubjectKeyId)},
		{"local CA: 10 days", localLeaf[0].NotAfter.Sub(localLeaf[0].NotBefore) == 10*24*time.Hour},
		{"local CA: extensions copied", hasExt(localLeaf[0], asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1})},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: no", ch.name)
		}
	}
}

// TestCertdFrameworkCases: the route-dependent cases of aziot-api.md §15.1
// on certd's /certificates (framework_test.go lists certd without a route).
func TestCertdFrameworkCases(t *testing.T) {
	d := startDaemon(t, "")
	v := "?api-version=" + certdVersion
	jsonCT := map[string]string{"Content-Type": "application/json"}
	text := map[string]string{"Content-Type": "text/plain"}
	cases := []struct {
		name    string
		req     request
		status  int
		message string
	}{
		{"wrong method", request{Method: "GET", Target: "/certificates" + v}, 400, "method not allowed"},
		{"DELETE", request{Method: "DELETE", Target: "/certificates" + v}, 400, "method not allowed"},
		{"malformed JSON", request{Method: "POST", Target: "/certificates" + v, Header: jsonCT, Body: `{"a":`}, 422, ""},
		{"POST text/plain is no body", request{Method: "POST", Target: "/certificates" + v, Header: text, Body: "{}"}, 400, "missing request body"},
		{"PUT text/plain", request{Method: "PUT", Target: "/certificates/x" + v, Header: text, Body: "{}"}, 415, "request body must be application/json"},
		{"PUT empty JSON body", request{Method: "PUT", Target: "/certificates/x" + v, Header: jsonCT}, 422, ""},
		{"old api-version", request{Method: "GET", Target: "/certificates/x?api-version=2021-05-01"}, 400, `invalid api-version "2021-05-01"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Socket = d.socket("certd")
			r := do(t, tc.req)
			if r.Status != tc.status || (tc.message != "" && r.message() != tc.message) {
				t.Fatalf("%d %s, want %d %q", r.Status, r.Body, tc.status, tc.message)
			}
		})
	}
}
