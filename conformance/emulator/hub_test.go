package emulator

import (
	"strings"
	"testing"
	"time"
)

// TestModuleRegistry: the §8.4 calls in aziot's order and their errors,
// with a device SAS.
func TestModuleRegistry(t *testing.T) {
	em := start(t, Options{})
	dev, _ := em.AddHubDevice(HubDevice{DeviceID: "edge-1"})
	c := em.Client()
	auth := hubSAS(t, em, "devices/edge-1", dev.PrimaryKey)
	keys := map[string]any{"primaryKey": NewKey(), "secondaryKey": NewKey()}
	var gen, etag string
	steps := []struct {
		name, method, mod string
		body              any
		ifMatch           string
		want              int
		check             func(r reply)
	}{
		{"list empty", "GET", "", nil, "", 200, func(r reply) {
			if string(r.raw) != "[]" {
				t.Errorf("list: %s", r.raw)
			}
		}},
		{"get missing", "GET", "m1", nil, "", 404, nil},
		{"create", "PUT", "m1", map[string]any{"moduleId": "m1", "deviceId": "edge-1"}, "", 200, func(r reply) {
			gen, _ = r.body["generationId"].(string)
			etag, _ = r.body["etag"].(string)
			a, _ := r.body["authentication"].(map[string]any)
			if gen == "" || etag == "" || a["type"] != "sas" || r.body["moduleId"] != "m1" || r.body["deviceId"] != "edge-1" {
				t.Errorf("create: %s", r.raw)
			}
		}},
		{"create again", "PUT", "m1", map[string]any{"moduleId": "m1", "deviceId": "edge-1"}, "", 409, nil},
		{"set keys", "PUT", "m1", map[string]any{"moduleId": "m1", "deviceId": "edge-1", "authentication": map[string]any{"type": "sas", "symmetricKey": keys}}, "*", 200, func(r reply) {
			a, _ := r.body["authentication"].(map[string]any)
			k, _ := a["symmetricKey"].(map[string]any)
			if k["primaryKey"] != keys["primaryKey"] || r.body["generationId"] != gen || r.body["etag"] == etag {
				t.Errorf("set keys: %s", r.raw)
			}
			etag, _ = r.body["etag"].(string)
		}},
		{"update quoted star", "PUT", "m1", map[string]any{"moduleId": "m1", "deviceId": "edge-1", "authentication": map[string]any{"type": "sas", "symmetricKey": keys}}, `"*"`, 200, func(r reply) { etag, _ = r.body["etag"].(string) }},
		{"update stale etag", "PUT", "m1", map[string]any{"moduleId": "m1", "authentication": map[string]any{"type": "sas", "symmetricKey": keys}}, `"stale"`, 412, nil},
		{"update missing", "PUT", "m9", map[string]any{"moduleId": "m9"}, "*", 404, nil},
		{"body mismatch", "PUT", "m2", map[string]any{"moduleId": "other"}, "", 400, nil},
		{"bad key", "PUT", "m2", map[string]any{"moduleId": "m2", "authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": "not base64!"}}}, "", 400, nil},
		{"create none", "PUT", "m2", map[string]any{"moduleId": "m2", "deviceId": "edge-1", "authentication": map[string]any{"type": "none"}}, "", 200, nil},
		{"get", "GET", "m1", nil, "", 200, func(r reply) {
			if r.body["generationId"] != gen {
				t.Errorf("get: %s", r.raw)
			}
		}},
		{"list two", "GET", "", nil, "", 200, func(r reply) {
			if !strings.Contains(string(r.raw), `"moduleId":"m1"`) || !strings.Contains(string(r.raw), `"moduleId":"m2"`) {
				t.Errorf("list: %s", r.raw)
			}
		}},
		{"delete without If-Match", "DELETE", "m2", nil, "", 412, nil},
		{"delete wrong etag", "DELETE", "m1", nil, `"nope"`, 412, nil},
		{"delete by etag", "DELETE", "m1", nil, "ETAG", 204, nil},
		{"delete star", "DELETE", "m2", nil, "*", 204, nil},
		{"delete missing", "DELETE", "m2", nil, "*", 404, nil},
	}
	for _, s := range steps {
		hdr := []string{}
		if s.ifMatch == "ETAG" {
			s.ifMatch = etag
		}
		if s.ifMatch != "" {
			hdr = []string{"If-Match", s.ifMatch}
		}
		r := call(t, c, s.method, modURL(em, "edge-1", s.mod), auth, s.body, hdr...)
		if r.status != s.want {
			t.Fatalf("%s: %d, want %d: %s", s.name, r.status, s.want, r.raw)
		}
		if r.status >= 400 && (!strings.HasPrefix(r.body["Message"].(string), "ErrorCode:") || r.body["message"] == nil) {
			t.Errorf("%s: error body %s", s.name, r.raw)
		}
		if s.check != nil {
			s.check(r)
		}
	}
	if m := em.Modules(em.HubHostname(), "edge-1"); len(m) != 0 {
		t.Errorf("modules left: %+v", m)
	}
}

// TestHubAuth: device SAS variants, module SAS on the module's own twin,
// and what is refused.
func TestHubAuth(t *testing.T) {
	em := start(t, Options{})
	dev, _ := em.AddHubDevice(HubDevice{DeviceID: "d1", SecondaryKey: NewKey()})
	other, _ := em.AddHubDevice(HubDevice{DeviceID: "d2"})
	c := em.Client()
	r := call(t, c, "PUT", modURL(em, "d1", "host-proc"), hubSAS(t, em, "devices/d1", dev.PrimaryKey), map[string]any{"moduleId": "host-proc"})
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	mkey := em.Modules(em.HubHostname(), "d1")[0].Authentication.SymmetricKey.PrimaryKey
	host, _, _ := strings.Cut(em.HubHostname(), ":")
	expired, _ := NewSASToken(dev.PrimaryKey, em.HubHostname()+"/devices/d1", time.Now().Add(-time.Second), "")
	withSkn, _ := NewSASToken(dev.PrimaryKey, em.HubHostname()+"/devices/d1", time.Now().Add(time.Minute), "iothubowner")
	noPort, _ := NewSASToken(dev.PrimaryKey, host+"/devices/d1", time.Now().Add(time.Minute), "")
	wrongHub, _ := NewSASToken(dev.PrimaryKey, "elsewhere.example/devices/d1", time.Now().Add(time.Minute), "")
	upper := strings.Replace(hubSAS(t, em, "devices/d1", dev.PrimaryKey), "sr=localhost", "sr=LOCALHOST", 1)
	twin := em.URL() + "/devices/d1/modules/host-proc/twin?api-version=2021-04-12"
	for _, tc := range []struct {
		name, url, auth string
		want            int
	}{
		{"device SAS", modURL(em, "d1", ""), hubSAS(t, em, "devices/d1", dev.PrimaryKey), 200},
		{"secondary key", modURL(em, "d1", ""), hubSAS(t, em, "devices/d1", dev.SecondaryKey), 200},
		{"hub without port", modURL(em, "d1", ""), noPort, 200},
		{"upper-case sr (signed lower)", modURL(em, "d1", ""), upper, 401},
		{"wrong key", modURL(em, "d1", ""), hubSAS(t, em, "devices/d1", NewKey()), 401},
		{"expired", modURL(em, "d1", ""), expired, 401},
		{"skn on a device key", modURL(em, "d1", ""), withSkn, 401},
		{"other device's token", modURL(em, "d1", ""), hubSAS(t, em, "devices/d2", other.PrimaryKey), 401},
		{"wrong hub", modURL(em, "d1", ""), wrongHub, 401},
		{"no auth", modURL(em, "d1", ""), "", 401},
		{"module SAS on registry", modURL(em, "d1", ""), hubSAS(t, em, "devices/d1/modules/host-proc", mkey), 401},
		{"module SAS on twin", twin, hubSAS(t, em, "devices/d1/modules/host-proc", mkey), 200},
		{"module SAS wrong key", twin, hubSAS(t, em, "devices/d1/modules/host-proc", NewKey()), 401},
		{"device SAS on module twin", twin, hubSAS(t, em, "devices/d1", dev.PrimaryKey), 200},
		{"unknown device", modURL(em, "d9", ""), hubSAS(t, em, "devices/d9", dev.PrimaryKey), 401},
	} {
		if r := call(t, c, "GET", tc.url, tc.auth, nil); r.status != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, r.status, tc.want, r.raw)
		}
	}
	if err := em.VerifyModuleSAS(em.HubHostname(), "d1", "host-proc", hubSAS(t, em, "devices/d1/modules/host-proc", mkey)); err != nil {
		t.Errorf("VerifyModuleSAS: %v", err)
	}
	if err := em.VerifyModuleSAS(em.HubHostname(), "d1", "host-proc", hubSAS(t, em, "devices/d1/modules/host-proc", NewKey())); err == nil {
		t.Error("VerifyModuleSAS accepted a wrong key")
	}
	ev := em.URL() + "/devices/d1/modules/host-proc/messages/events?api-version=2020-03-13"
	if r := call(t, c, "POST", ev, hubSAS(t, em, "devices/d1/modules/host-proc", mkey), map[string]any{"t": 21}); r.status != 204 {
		t.Errorf("events: %d %s", r.status, r.raw)
	}
	if m := em.Messages(); len(m) != 1 || m[0].ModuleID != "host-proc" || string(m[0].Body) != `{"t":21}` {
		t.Errorf("messages %+v", m)
	}
}
