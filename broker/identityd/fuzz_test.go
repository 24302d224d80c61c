package identityd

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/api/apitest"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

// fuzzHub answers hub jobs in-process and the same way every time: an
// input costs no WASM instance and no emulator round trip, and no input
// changes what the next one meets. Like IoT Hub it refuses module IDs
// outside its syntax; "nf-" modules are absent and "net-" ones
// unreachable, so that the 404 and backup fallbacks run as well.
type fuzzHub struct{}

func (fuzzHub) Run(_ context.Context, name string, in []byte) (*host.Result, error) {
	var job hubjob.Job
	if name != HubModule || json.Unmarshal(in, &job) != nil {
		return nil, errors.New("fuzz hub: not a hub job")
	}
	var res hubjob.Result
	switch id := job.ModuleID; {
	case job.Op == hubjob.OpList:
		res.Modules = []json.RawMessage{hubModule(job.DeviceID, "hp")}
	case !hubModuleID(id):
		return nil, guest.Errorf(hubjob.CodeFailed, "ArgumentInvalid: module ID %q", id)
	case strings.HasPrefix(id, "nf-"):
		return nil, guest.Errorf(hubjob.CodeNotFound, "module %s not found", id)
	case strings.HasPrefix(id, "net-"):
		return nil, guest.Errorf(hubjob.CodeNetwork, "hub unreachable")
	case job.Op != hubjob.OpDelete:
		res.Module = hubModule(job.DeviceID, id)
	}
	out, err := json.Marshal(res)
	return &host.Result{Module: name, Output: out}, err
}

func hubModule(dev, id string) json.RawMessage {
	b, _ := json.Marshal(identity.Module{ModuleID: id, DeviceID: dev, GenerationID: "gen-1"})
	return b
}

// hubModuleID is IoT Hub's module ID syntax: 1 to 128 ASCII letters,
// digits and -:.+%_#*?!(),=@$'.
func hubModuleID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && !strings.ContainsRune("-:.+%_#*?!(),=@$'", rune(c)) {
			return false
		}
	}
	return true
}

// refuseTokens is a token verifier that knows no token: a bearer token a
// fuzz input smuggles into a header is refused, as an unknown one is.
type refuseTokens struct{}

func (refuseTokens) Verify(context.Context, string, uint32) (*capabilities.Claims, error) {
	return nil, capabilities.ErrInvalid
}

// Callers of the fuzz target besides root: host process "hp" (idtype
// module), host process "lp" (idtype local), and a uid with no principal.
const (
	uidHostProcess = 2000
	uidLocal       = 2001
	uidNobody      = 4242
)

// newFuzzHandler is identityd manually provisioned (connection string,
// no cloud call) over a key store and state in a temp dir, with the
// default policy and the fuzz hub, started once: its reconciliation
// creates module "hp".
func newFuzzHandler(t testing.TB) http.Handler {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	discard := slog.New(slog.DiscardHandler)
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: filepath.Join(dir, "keystore")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	principals := []config.Principal{
		{UID: uidHostProcess, Name: "hp", IDType: []string{"module"}},
		{UID: uidLocal, Name: "lp", IDType: []string{"local"}},
	}
	var pp []policy.Principal
	names := map[uint32]string{}
	for _, p := range principals {
		pp = append(pp, policy.Principal{UID: p.UID, Name: p.Name, IDType: p.IDType})
		names[p.UID] = p.Name
	}
	engine, err := policy.New(ctx, policy.Options{Principals: pp, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	guard := api.NewGuard(refuseTokens{}, engine, discard, nil)
	guard.SetPrincipalNames(names)
	key := base64.StdEncoding.EncodeToString([]byte("fuzz-device-key-0123456789abcdef"))
	cfg := &config.Config{Principals: principals, Provisioning: &config.Provisioning{Source: "manual",
		ConnectionString: "HostName=hub.example;DeviceId=fuzz-dev;SharedAccessKey=" + key}}
	s, err := New(guard, cfg, Options{Keys: keys, Handles: hsm.NewHandles(keys), Modules: fuzzHub{},
		StateDir: filepath.Join(dir, "identity"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil || s.Device() == nil {
		t.Fatalf("start: %v (device %v)", err, s.Device())
	}
	return s.Service().Handler()
}

// wireRequest parses the request as the broker's server does
// (http.ReadRequest), so the handler gets only what a client can send; ok
// is false for one the server refuses before any handler runs.
func wireRequest(method, target, body string, uid uint32) (r *http.Request, ok bool) {
	if strings.ContainsAny(target, " \r\n") {
		return nil, false // not one request-target
	}
	raw := method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return nil, false
	}
	return r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1})), true
}

// identityRoutes are identityd's routes that read a body, the type query
// or a module ID; withID routes take the fuzzed ID as their last segment.
var identityRoutes = []struct {
	method, path string
	withID       bool
}{
	{"POST", "/identities/device", false},
	{"POST", "/identities/device/reprovision", false},
	{"GET", "/identities/modules", false},
	{"POST", "/identities/modules", false},
	{"GET", "/identities/modules", true},
	{"PUT", "/identities/modules", true},
	{"DELETE", "/identities/modules", true},
}

var identityCallers = []uint32{0, uidHostProcess, uidLocal, uidNobody}

// identitySel packs a route index, a caller index and an api-version
// index into a seed's selector byte.
func identitySel(route, caller, version int) uint8 {
	return uint8(route + len(identityRoutes)*(caller+len(identityCallers)*version))
}

// FuzzIdentitydRequest sends arbitrary bodies, module IDs (raw path
// segments) and queries (the type parameter) to identityd's routes
// in-process, as root (operations run, against the fuzz hub), as host
// processes and as a uid without a principal, on each api-version: never a
// panic, never a 5xx, and every error is aziot's {"message": "…"} with a
// 4xx status.
func FuzzIdentitydRequest(f *testing.F) {
	h := newFuzzHandler(f)
	seeds := []struct {
		route, caller int
		id, query     string
		body          string
	}{
		{0, 0, "", "", `{"type":"aziot"}`},
		{0, 1, "", "", `{"type":"aziot","moduleId":"hp"}`},
		{1, 0, "", "", `{}`},
		{1, 0, "", "", ``},
		{2, 0, "", "type=aziot", ``},
		{2, 0, "", "type=local&type=aziot", ``},
		{3, 0, "", "", `{"type":"aziot","moduleId":"m-1"}`},
		{3, 0, "", "", `{"type":"aziot","moduleId":"net-1"}`},
		{3, 0, "", "", `{"type":"local","moduleId":"lp","localIdOpts":{"type":"x509","attributes":"server"}}`},
		{3, 0, "", "", `{"type":"local","moduleId":"x","localIdOpts":[]}`},
		{3, 0, "", "", `{"type":"local","moduleId":"x","localIdOpts":{"attributes":1}}`},
		{3, 0, "", "", `{"type":"other","moduleId":"x"}`},
		{3, 0, "", "", `{"type":"aziot","moduleId":null}`},
		{3, 0, "", "", `{"type":"aziot","moduleId":"a\u0000b"}`},
		{4, 1, "hp", "type=aziot", ``},
		{4, 2, "lp", "type=local", ``},
		{4, 0, "nf-gone", "type=aziot", ``},
		{4, 0, "net-down", "type=aziot", ``},
		{4, 0, "a%2Fb", "type=", ``},
		{4, 0, "%ff%00", "type", ``},
		{4, 0, "%zz", "type=%zz", ``},
		{5, 0, "hp", "type=aziot", `{}`},
		{5, 0, "hp", "type=aziot", ``},
		{6, 0, "nf-x", "type=aziot", ``},
		{6, 3, "hp", "type=aziot;x", ``},
		{3, 3, "", "", `{"type":1,"moduleId":[]}`},
		{0, 0, "", "", "{\"type\":\"aziot\"}\x00"},
		{3, 0, "", "", `[]`}, {3, 0, "", "", `null`}, {3, 0, "", "", `"x"`}, {3, 0, "", "", `{`},
		{5, 0, "hp", "type=aziot", `[]`}, {5, 0, "hp", "type=aziot", `{`},
	}
	for i, s := range seeds {
		f.Add(identitySel(s.route, s.caller, i%len(Versions)), s.id, s.query, s.body)
	}
	f.Fuzz(func(t *testing.T, sel uint8, id, query, body string) {
		n := int(sel)
		rt := identityRoutes[n%len(identityRoutes)]
		n /= len(identityRoutes)
		uid := identityCallers[n%len(identityCallers)]
		target := rt.path
		if rt.withID {
			target += "/" + id
		}
		target += "?api-version=" + Versions[n/len(identityCallers)%len(Versions)]
		if query != "" {
			target += "&" + query
		}
		r, ok := wireRequest(rt.method, target, body, uid)
		if !ok {
			return
		}
		what := rt.method + " " + target + " " + strconv.Quote(body) + " as " + strconv.Itoa(int(uid))
		defer watchdog(what).Stop()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		apitest.CheckAnswer(t, what, w.Code, w.Body.String())
	})
}

// watchdog panics if the request is not answered in time: the panic ends
// the fuzz worker, so the fuzzer keeps the input as a crasher, where a
// hung call would only stall it.
func watchdog(what string) *time.Timer {
	return time.AfterFunc(30*time.Second, func() { panic("no answer in 30s: " + what) })
}

// TestLocalIDOptsError: a localIdOpts of the wrong shape is a 422 that
// names the field, not encoding/json's text with the Go struct in it (a
// finding of FuzzIdentitydRequest).
func TestLocalIDOptsError(t *testing.T) {
	h := newFuzzHandler(t)
	for opts, want := range map[string]string{
		`[]`:                `invalid type for field "localIdOpts": expected an object, found JSON array`,
		`{"attributes":1}`:  `invalid type for field "localIdOpts.attributes": expected a string, found JSON number`,
		`{"type":["x509"]}`: `invalid type for field "localIdOpts.type": expected a string, found JSON array`,
	} {
		body := `{"type":"local","moduleId":"x","localIdOpts":` + opts + `}`
		r, _ := wireRequest("POST", "/identities/modules?api-version=2021-12-01", body, 0)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var got struct{ Message string }
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != http.StatusUnprocessableEntity || got.Message != want {
			t.Errorf("localIdOpts %s: %d %s, want 422 %q", opts, w.Code, w.Body, want)
		}
	}
}

// TestBlankModuleID: an empty or blank module ID is aziot's 400 on
// `module_id` (its identity manager refuses it before any hub call), not
// a hub round trip answered 404 "Hub client error".
func TestBlankModuleID(t *testing.T) {
	h := newFuzzHandler(t)
	const want = "parameter \"module_id\" has an invalid value\ncaused by: module name cannot be empty"
	for _, c := range []struct{ method, target, body string }{
		{"POST", "/identities/modules?api-version=2021-12-01", `{"type":"aziot","moduleId":""}`},
		{"POST", "/identities/modules?api-version=2021-12-01", `{"type":"aziot","moduleId":" \t"}`},
		{"GET", "/identities/modules/%20?api-version=2021-12-01&type=aziot", ``},
		{"PUT", "/identities/modules/%20?api-version=2021-12-01&type=aziot", `{}`},
		{"DELETE", "/identities/modules/%20?api-version=2021-12-01&type=aziot", ``},
	} {
		r, _ := wireRequest(c.method, c.target, c.body, 0)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var got struct{ Message string }
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != http.StatusBadRequest || got.Message != want {
			t.Errorf("%s %s %s: %d %s, want 400 %q", c.method, c.target, c.body, w.Code, w.Body, want)
		}
	}
}
