package keyd

import (
	"net/http"
	"strings"
	"testing"

	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
)

// TestReservedKeys: no caller, root included, may load, create, import,
// move or derive from the broker's token key or the handle validation key
// by ID. Importing a known validation key, or an HMAC with it, would forge
// a handle for every key; signing with the token key would forge tokens.
func TestReservedKeys(t *testing.T) {
	e := newEnv(t)
	// Both exist, as they do in wardend: the token key from the start, the
	// validation key once a handle was issued.
	if h := e.post("/key", map[string]any{"keyId": "a-mac", "usage": "sign"}).field("keyHandle"); h == "" {
		t.Fatal("no handle for an ordinary key")
	}
	tok, val := capabilities.TokenKeyID, hsm.HandleValidationKeyID
	key32 := strings.Repeat("A", 43) + "="
	for _, tc := range []struct{ name, method, target, body string }{
		{"load the validation key", "GET", "/key/" + val, ""},
		{"import over the validation key", "POST", "/key", `{"keyId":"` + val + `","usage":"sign","keyBytes":"` + key32 + `"}`},
		{"create the validation key", "POST", "/key", `{"keyId":"` + val + `","usage":"sign"}`},
		{"load the token key", "GET", "/keypair/" + tok, ""},
		{"create the token key", "POST", "/keypair", `{"keyId":"` + tok + `","preferredAlgorithms":"ec-p256"}`},
		{"move a key over the token key", "POST", "/keypair/" + tok, `{"from":"a-x"}`},
		{"move the token key away", "POST", "/keypair/a-stolen", `{"from":"` + tok + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call(root, "", tc.method, tc.target, tc.body)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("%s %s: %d %s, want 401", tc.method, tc.target, r.status, r.body)
			}
		})
	}
	// The validation key was not replaced: the handle issued before still
	// works.
	h := e.post("/key", map[string]any{"keyId": "a-mac", "usage": "sign"}).field("keyHandle")
	if r := e.post("/sign", map[string]any{"keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "bQ=="}}); r.status != http.StatusOK {
		t.Fatalf("sign with an ordinary key: %d %s", r.status, r.body)
	}
}
