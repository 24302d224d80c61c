package certd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/certs"
)

const routesConfig = `
[cert_issuance.local_ca]
cert = { method = "self_signed", common_name = "Warden Test CA", expiry_days = 365 }

[cert_issuance.self]
method = "self_signed"
expiry_days = 2

[cert_issuance.a-leaf]
method = "local_ca"
common_name = "overridden"

[cert_issuance.a-est]
method = "est"
url = "https://127.0.0.1:1/.well-known/est"

[preloaded_certs]
pre = "file://%[1]s/pre.pem"
bundle = ["pre", "a-imported", "absent"]
`

const (
	msgNotFound       = "parameter \"id\" has an invalid value\ncaused by: not found"
	msgIssuerRequired = "parameter \"issuer\" has an invalid value\ncaused by: issuer is required for locally-issued certs"
)

// TestRoutes covers C1–C4: status codes, aziot's messages, authorization
// with wildcard principals, and IDs with "/" in the body and as %2F.
func TestRoutes(t *testing.T) {
	e := newEnv(t, routesConfig)
	os.WriteFile(filepath.Join(e.dir, "pre.pem"), []byte("PRELOADED\n"), 0o644)
	selfKey, _ := e.keyPair("self")
	otherKey, _ := e.keyPair("other")
	_, caHandle := e.keyPair("issuer-key")
	leafCSR := csrPEM(t, otherKey, "leaf", certs.CSROptions{})
	selfCSR := csrPEM(t, selfKey, "self", certs.CSROptions{})

	// The explicit issuer's key; its CA certificate is issued below.
	issuerSigner, _ := e.keys.Signer(context.Background(), "issuer-key")
	caCSR, _ := caCSR(issuerSigner, "explicit CA")

	create := func(id, csr string, issuer map[string]string) string {
		b := map[string]any{"certId": id, "csr": csr}
		if issuer != nil {
			b["issuer"] = issuer
		}
		return jsonBody(b)
	}
	cases := []struct {
		name   string
		uid    uint32
		method string
		target string
		body   string
		want   check
	}{
		{"self-signed", root, "POST", "/certificates", create("self", selfCSR, nil), check{201, ""}},
		{"self-signed with another key's CSR", root, "POST", "/certificates", create("self", leafCSR, nil), check{400, ""}},
		{"local CA by a wildcard principal", uidA, "POST", "/certificates", create("a-leaf", leafCSR, nil), check{201, ""}},
		{"refused", uidA, "POST", "/certificates", create("b-leaf", leafCSR, nil), check{401, "user 1000 is not authorized to modify the cert b-leaf"}},
		{"no issuance options", root, "POST", "/certificates", create("nothing", leafCSR, nil), check{400, msgIssuerRequired}},
		{"explicit issuer missing", root, "POST", "/certificates", create("x", leafCSR, map[string]string{"certId": "none", "privateKeyHandle": caHandle}), check{400, "parameter \"issuer.certId\" has an invalid value\ncaused by: not found"}},
		{"explicit issuer, forged handle", root, "POST", "/certificates", create("x", leafCSR, map[string]string{"certId": "local-ca", "privateKeyHandle": "sr=e30=&sig=AAAA"}), check{400, "parameter \"issuer.privateKeyHandle\" has an invalid value\ncaused by: invalid handle"}},
		{"CSR not PEM", root, "POST", "/certificates", create("self", "garbage", nil), check{400, ""}},
		{"EST without the module", uidA, "POST", "/certificates", create("a-est", leafCSR, nil), check{500, "internal error"}},
		{"certId missing", root, "POST", "/certificates", `{"csr":"x"}`, check{422, "missing field `certId`"}},
		{"csr missing", root, "POST", "/certificates", `{"certId":"x"}`, check{422, "missing field `csr`"}},
		{"csr null", root, "POST", "/certificates", `{"certId":"x","csr":null}`, check{422, ""}},
		{"issuer not an object", root, "POST", "/certificates", `{"certId":"x","csr":"y","issuer":3}`, check{422, ""}},
		{"issuer without handle", root, "POST", "/certificates", `{"certId":"x","csr":"y","issuer":{"certId":"z"}}`, check{422, "missing field `privateKeyHandle`"}},
		{"no body", root, "POST", "/certificates", "", check{400, "missing request body"}},
		{"malformed JSON", root, "POST", "/certificates", `{"certId":`, check{422, ""}},
		{"import", uidA, "PUT", "/certificates/a-imported", `{"pem":"IMPORTED"}`, check{201, ""}},
		{"import refused", uidA, "PUT", "/certificates/b-imported", `{"pem":"x"}`, check{401, "user 1000 is not authorized to modify the cert b-imported"}},
		{"import %2F ID by glob", uidA, "PUT", "/certificates/agent%2Fmodule%2Fm%3Aidentity", `{"pem":"SLASHED"}`, check{201, ""}},
		{"import into a bundle", root, "PUT", "/certificates/bundle", `{"pem":"x"}`, check{400, ""}},
		{"import without pem", root, "PUT", "/certificates/x", `{}`, check{422, "missing field `pem`"}},
		{"get %2F ID", 4242, "GET", "/certificates/agent%2Fmodule%2Fm%3Aidentity", "", check{200, ""}},
		{"get is open", 4242, "GET", "/certificates/a-imported", "", check{200, ""}},
		{"get bundle", root, "GET", "/certificates/bundle", "", check{200, ""}},
		{"get missing", 4242, "GET", "/certificates/absent", "", check{400, msgNotFound}},
		{"delete refused", uidA, "DELETE", "/certificates/self", "", check{401, "user 1000 is not authorized to modify the cert self"}},
		{"delete missing is success", root, "DELETE", "/certificates/never", "", check{204, ""}},
		{"POST on an ID", root, "POST", "/certificates/x", `{}`, check{400, "method not allowed"}},
		{"GET the collection", root, "GET", "/certificates", "", check{400, "method not allowed"}},
		{"unknown path", root, "GET", "/certificate/x", "", check{404, "not found"}},
		{"old api-version", root, "GET", "/certificates/self?api-version=2021-05-01", "", check{400, `invalid api-version "2021-05-01"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.verify(t, e.call(tc.uid, tc.method, tc.target, tc.body))
		})
	}

	t.Run("answers carry the chain and it is stored", func(t *testing.T) {
		r := e.call(uidA, "POST", "/certificates", create("a-leaf", leafCSR, nil))
		check{201, ""}.verify(t, r)
		c := chain(t, r.pem())
		if len(c) != 2 || c[0].Subject.CommonName != "overridden" || c[1].Subject.CommonName != "Warden Test CA" {
			t.Fatalf("chain %v", c)
		}
		if err := c[0].CheckSignatureFrom(c[1]); err != nil {
			t.Fatal(err)
		}
		if got := e.call(4242, "GET", "/certificates/a-leaf", ""); got.pem() != r.pem() {
			t.Fatal("GET differs from the issued chain")
		}
	})
	t.Run("explicit issuer", func(t *testing.T) {
		// Issue a CA for issuer-key from the local CA, then sign with it by handle.
		caChain, err := e.server.Issue(context.Background(), "a-leaf", []byte(csrPEM(t, issuerSigner, "explicit CA", certs.CSROptions{Extensions: caCSR.Extensions})), nil)
		if err != nil {
			t.Fatal(err)
		}
		check{201, ""}.verify(t, e.call(root, "PUT", "/certificates/explicit-ca", jsonBody(map[string]string{"pem": string(caChain)})))
		r := e.call(uidA, "POST", "/certificates", create("agent/module/m:1:server", leafCSR, map[string]string{"certId": "explicit-ca", "privateKeyHandle": caHandle}))
		check{201, ""}.verify(t, r)
		c := chain(t, r.pem())
		if len(c) != 3 || c[0].CheckSignatureFrom(c[1]) != nil || !bytes.Equal(c[0].AuthorityKeyId, c[1].SubjectKeyId) {
			t.Fatalf("explicit issuer chain: %d certs", len(c))
		}
		if exp := c[0].NotAfter.Sub(c[0].NotBefore); exp != 30*24*time.Hour {
			t.Fatalf("default validity %s", exp)
		}
	})
	t.Run("bundle concatenates members that exist", func(t *testing.T) {
		if got := e.call(root, "GET", "/certificates/bundle", "").pem(); got != "PRELOADED\nIMPORTED\n" {
			t.Fatalf("bundle %q", got)
		}
	})
	t.Run("delete, then not found", func(t *testing.T) {
		check{204, ""}.verify(t, e.call(uidA, "DELETE", "/certificates/agent%2Fmodule%2Fm%3Aidentity", ""))
		check{400, msgNotFound}.verify(t, e.call(root, "GET", "/certificates/agent%2Fmodule%2Fm%3Aidentity", ""))
	})
	t.Run("delete a preloaded cert deletes its file", func(t *testing.T) {
		check{204, ""}.verify(t, e.call(root, "DELETE", "/certificates/pre", ""))
		if _, err := os.Stat(filepath.Join(e.dir, "pre.pem")); !os.IsNotExist(err) {
			t.Fatalf("preloaded file: %v", err)
		}
	})
	t.Run("cert files are 0644 in a 0700 dir", func(t *testing.T) {
		p, _ := e.server.Store().Path("self")
		fi, err := os.Stat(p)
		di, err2 := os.Stat(filepath.Dir(p))
		if err != nil || err2 != nil || fi.Mode().Perm() != 0o644 || di.Mode().Perm() != 0o700 {
			t.Fatalf("%v %v %v %v", fi, di, err, err2)
		}
	})
}

// TestExpiredExplicitIssuer: an explicit issuer whose certificate has
// expired issues nothing: 400 naming issuer.certId, not a certificate
// that ends before it begins.
func TestExpiredExplicitIssuer(t *testing.T) {
	e := newEnv(t, routesConfig)
	issuer, handle := e.keyPair("old-ca-key")
	leafKey, _ := e.keyPair("leaf-key")
	csr, err := caCSR(issuer, "expired CA")
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.Issue(csr, nil, issuer, certs.IssueOptions{Validity: time.Hour, Now: time.Now().Add(-48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.call(root, "PUT", "/certificates/old-ca", jsonBody(map[string]string{"pem": string(certs.EncodePEM(der))})); r.status != 201 {
		t.Fatalf("import the expired CA: %d %s", r.status, r.body)
	}
	body := jsonBody(map[string]any{"certId": "leaf", "csr": csrPEM(t, leafKey, "leaf", certs.CSROptions{}),
		"issuer": map[string]string{"certId": "old-ca", "privateKeyHandle": handle}})
	r := e.call(root, "POST", "/certificates", body)
	want := "parameter \"issuer.certId\" has an invalid value\ncaused by: the issuer's certificate has expired"
	var got struct{ Message string }
	json.Unmarshal([]byte(r.body), &got)
	if r.status != 400 || got.Message != want {
		t.Fatalf("create under an expired issuer: %d %s, want 400 %q", r.status, r.body, want)
	}
}

// TestDeleteBody: aziot's framework parses a DELETE body before the route
// runs (aziot-api.md §2.3): a non-empty body that is JSON by its
// Content-Type (or has none) and does not parse is a 422, and nothing is
// deleted; a body of another media type is ignored; valid JSON of any
// shape is ignored (C4's body type is serde's IgnoredAny).
func TestDeleteBody(t *testing.T) {
	e := newEnv(t, routesConfig)
	put := func(id string) {
		t.Helper()
		check{201, ""}.verify(t, e.call(root, "PUT", "/certificates/"+id, `{"pem":"KEEP"}`))
	}
	put("keep")
	check{422, ""}.verify(t, e.call(root, "DELETE", "/certificates/keep", `{"a":`))
	check{200, ""}.verify(t, e.call(root, "GET", "/certificates/keep", ""))
	check{204, ""}.verify(t, e.call(root, "DELETE", "/certificates/keep", `[1,{"x":null}]`))
	check{400, msgNotFound}.verify(t, e.call(root, "GET", "/certificates/keep", ""))

	put("text")
	r := httptest.NewRequest("DELETE", "/certificates/text?api-version=2020-09-01", strings.NewReader(`{"a":`))
	r.Header.Set("Content-Type", "text/plain")
	r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: root, GID: root, PID: 1}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != 204 {
		t.Fatalf("DELETE with a text/plain body: %d %s, want 204 (body ignored)", w.Code, w.Body)
	}
}
