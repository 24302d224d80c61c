package certd

import (
	"fmt"
	"testing"

	"github.com/warden-iot/warden/broker/api/apitest"
	"github.com/warden-iot/warden/certs"
)

// FuzzCertdRequest sends arbitrary bodies to C1 and C2 in-process, as root
// (issuance runs: self-signed and local CA are configured) and as a uid
// without a principal: never a panic, never a 500, and every error is
// aziot's {"message": "…"} with a 4xx status.
func FuzzCertdRequest(f *testing.F) {
	e := newEnv(f, routesConfig)
	selfKey, _ := e.keyPair("self")
	good := csrPEM(f, selfKey, "self", certs.CSROptions{})
	seeds := []string{
		jsonBody(map[string]any{"certId": "self", "csr": good}),
		jsonBody(map[string]any{"certId": "a-leaf", "csr": good}),
		jsonBody(map[string]any{"certId": "x", "csr": good, "issuer": map[string]string{"certId": "self", "privateKeyHandle": "sr=e30=&sig="}}),
		`{"certId":"x","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"pem":"x"}`, `{"pem":null}`, `{"certId":"a\u0000b","csr":"y"}`, `{"issuer":[]}`,
		`[]`, `null`, `"x"`, `{`, ``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	routes := []struct{ method, target string }{
		{"POST", "/certificates"},
		{"PUT", "/certificates/a-fuzz"},
		{"PUT", "/certificates/bundle"},
	}
	f.Fuzz(func(t *testing.T, sel uint8, body string) {
		rt := routes[int(sel)%len(routes)]
		uid := uint32(4242)
		if sel&0x80 != 0 {
			uid = root
		}
		r := e.call(uid, rt.method, rt.target, body)
		apitest.CheckAnswer(t, fmt.Sprintf("%s %s %q as %d", rt.method, rt.target, body, uid), r.status, r.body)
	})
}
