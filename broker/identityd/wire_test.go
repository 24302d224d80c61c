package identityd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// TestFrameworkBodyFirst: aziot's framework reads and parses a PUT or
// DELETE body before the route runs (aziot-api.md §2.3), so a body error
// (415, 422) wins over the route's own checks, such as the mandatory
// type parameter, and a DELETE whose JSON body does not parse deletes
// nothing.
func TestFrameworkBodyFirst(t *testing.T) {
	h := newFuzzHandler(t)
	const v = "?api-version=2020-09-01"
	for _, c := range []struct {
		method, target, contentType, body string
		status                            int
		message                           string
	}{
		{"PUT", "/identities/modules/hp" + v, "text/plain", `{}`, 415, "request body must be application/json"},
		{"PUT", "/identities/modules/hp" + v, "application/json", `{`, 422, ""},
		{"PUT", "/identities/modules/hp" + v, "application/json", ``, 422, ""},
		{"PUT", "/identities/modules/hp" + v + "&type=aziot", "text/plain", `{}`, 415, "request body must be application/json"},
		{"PUT", "/identities/modules/hp" + v, "application/json", `{}`, 400, "parameter \"type\" has an invalid value\ncaused by: missing parameter"},
		{"DELETE", "/identities/modules/hp" + v + "&type=aziot", "application/json", `{"a":`, 422, ""},
		{"DELETE", "/identities/modules/hp" + v, "application/json", `{"a":`, 422, ""},
		{"DELETE", "/identities/modules/hp" + v + "&type=aziot", "text/plain", `{"a":`, 204, ""},
		{"DELETE", "/identities/modules/hp" + v + "&type=aziot", "application/json", `[1]`, 204, ""},
	} {
		r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
		r.Header.Set("Content-Type", c.contentType)
		r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: 0, GID: 0, PID: 1}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var got struct{ Message string }
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != c.status || (c.message != "" && got.Message != c.message) {
			t.Errorf("%s %s (%s) %q: %d %s, want %d %q", c.method, c.target, c.contentType, c.body, w.Code, w.Body, c.status, c.message)
		}
	}
}

// TestConnectionStringGatewayIgnored: aziot's connection-string parser
// keeps HostName, DeviceId and SharedAccessKey and ignores every other
// component (aziot-api.md §9.5), so a GatewayHostName in it changes
// nothing: gatewayHost is the hub's name unless local_gateway_hostname is
// configured (§6.2).
func TestConnectionStringGatewayIgnored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	discard := slog.New(slog.DiscardHandler)
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: filepath.Join(dir, "keystore")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	engine, err := policy.New(ctx, policy.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("gateway-device-key-0123456789abc"))
	for _, c := range []struct {
		name, localGateway, want string
	}{
		{"no local_gateway_hostname", "", "hub.example"},
		{"local_gateway_hostname", "configured-parent", "configured-parent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{LocalGatewayHostname: c.localGateway, Provisioning: &config.Provisioning{Source: "manual",
				ConnectionString: "HostName=hub.example;DeviceId=gw-dev;SharedAccessKey=" + key + ";GatewayHostName=cs-parent"}}
			s, err := New(api.NewGuard(refuseTokens{}, engine, discard, nil), cfg, Options{Keys: keys, Handles: hsm.NewHandles(keys),
				Modules: fuzzHub{}, StateDir: filepath.Join(t.TempDir(), "identity"), Logger: discard})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			r, _ := wireRequest("POST", "/identities/device?api-version=2020-09-01", `{"type":"aziot"}`, 0)
			w := httptest.NewRecorder()
			s.Service().Handler().ServeHTTP(w, r)
			var id Identity
			if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &id) != nil || id.Spec == nil {
				t.Fatalf("POST /identities/device: %d %s", w.Code, w.Body)
			}
			if id.Spec.HubName != "hub.example" || id.Spec.GatewayHost != c.want {
				t.Fatalf("hubName %q gatewayHost %q, want hub.example and %q", id.Spec.HubName, id.Spec.GatewayHost, c.want)
			}
		})
	}
}

// TestAuthorizationBeforeType: aziot's identity API authorizes the
// operation before it looks at the type parameter, so a caller that may
// not perform it gets 401 "authorization error" (aziot-api.md §6.3)
// whether or not it sent a valid type; one that may gets the 400 on type.
func TestAuthorizationBeforeType(t *testing.T) {
	h := newFuzzHandler(t)
	const v = "?api-version=2021-12-01"
	const missing = "parameter \"type\" has an invalid value\ncaused by: missing parameter"
	for _, c := range []struct {
		uid                  uint32
		method, target, body string
		status               int
		message              string
	}{
		{uidNobody, "GET", "/identities/modules" + v, "", 401, "authorization error"},
		{uidNobody, "GET", "/identities/modules" + v + "&type=local", "", 401, "authorization error"},
		{uidNobody, "GET", "/identities/modules/hp" + v, "", 401, "authorization error"},
		{uidHostProcess, "GET", "/identities/modules/other" + v, "", 401, "authorization error"},
		{uidHostProcess, "PUT", "/identities/modules/hp" + v, "{}", 401, "authorization error"},
		{uidHostProcess, "DELETE", "/identities/modules/hp" + v, "", 401, "authorization error"},
		{uidHostProcess, "GET", "/identities/modules/hp" + v, "", 400, missing},
		{0, "GET", "/identities/modules" + v, "", 400, missing},
		{0, "PUT", "/identities/modules/hp" + v + "&type=local", "{}", 400, "parameter \"type\" has an invalid value\ncaused by: invalid type: local"},
		{0, "DELETE", "/identities/modules/hp" + v, "", 400, missing},
	} {
		r, _ := wireRequest(c.method, c.target, c.body, c.uid)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var got struct{ Message string }
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != c.status || got.Message != c.message {
			t.Errorf("%s %s as %d: %d %s, want %d %q", c.method, c.target, c.uid, w.Code, w.Body, c.status, c.message)
		}
	}
}
