package control

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/api/apitest"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// fuzzAuthority is a real Authority whose revocations do not last: each
// input meets the same tokens unrevoked, and the list does not grow with
// every id the fuzzer makes up. Revoke still validates as the real one.
type fuzzAuthority struct {
	*capabilities.Authority
	signer crypto.Signer
}

func (a fuzzAuthority) Revoke(ctx context.Context, id string, exp time.Time) error {
	scratch, err := capabilities.NewAuthority(a.signer, capabilities.Options{CacheSize: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	return scratch.Revoke(ctx, id, exp)
}

func (a fuzzAuthority) RevokeToken(ctx context.Context, c *capabilities.Claims) error {
	scratch, err := capabilities.NewAuthority(a.signer, capabilities.Options{CacheSize: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	return scratch.RevokeToken(ctx, c)
}

// fuzzModules is a module host with one module, "est", whose jobs echo
// their input; other names are not configured.
type fuzzModules struct{}

func (fuzzModules) Modules() []host.ModuleStatus {
	return []host.ModuleStatus{{Name: "est", Digest: "sha256:ab", Loaded: true}}
}

func (fuzzModules) Reload(context.Context) error { return nil }

func (fuzzModules) Run(_ context.Context, name string, in []byte) (*host.Result, error) {
	if name != "est" {
		return nil, host.ErrUnknownModule
	}
	out := json.RawMessage(in)
	if len(in) == 0 {
		out = json.RawMessage("null")
	}
	return &host.Result{Module: name, Digest: "sha256:ab", Output: out}, nil
}

// Callers besides root: a daemon principal (keys "a-*") and a uid with no
// principal.
const (
	uidDaemon = 1000
	uidNobody = 4242
)

var controlCallers = []uint32{0, uidDaemon, uidNobody}

// controlEnv is broker.sock in-process with a token authority, the default
// policy and the fuzz module host; tokens[uid] is a token bound to uid.
type controlEnv struct {
	h      http.Handler
	tokens map[uint32]string
}

func newControlEnv(t testing.TB) *controlEnv {
	t.Helper()
	ctx := context.Background()
	discard := slog.New(slog.DiscardHandler)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := capabilities.NewAuthority(key, capabilities.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(ctx, policy.Options{Logger: discard,
		Principals: []policy.Principal{{UID: uidDaemon, Name: "agent-a", Keys: []string{"a-*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	guard := api.NewGuard(auth, engine, discard, nil)
	guard.SetPrincipalNames(map[uint32]string{uidDaemon: "agent-a"})
	s := New(fuzzAuthority{auth, key}, guard, discard, engine.Revision)
	svc := s.Service()
	svc.Routes = append(svc.Routes, s.ModuleRoutes(fuzzModules{})...)
	e := &controlEnv{h: svc.Handler(), tokens: map[uint32]string{}}
	for _, uid := range controlCallers {
		tok, _, err := auth.Mint(ctx, "", uid, []capabilities.Capability{{Resource: "key:a-*", Ops: []string{"sign"}}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[uid] = tok
	}
	return e
}

// serve sends the request as the broker's server parses it
// (http.ReadRequest), so the handler gets only what a client can send; ok
// is false for one the server refuses before any handler runs.
func (e *controlEnv) serve(uid uint32, bearer bool, method, target, body string) (status int, answer string, ok bool) {
	if strings.ContainsAny(target, " \r\n") {
		return 0, "", false // not one request-target
	}
	raw := method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	if bearer {
		raw += "Authorization: Bearer " + e.tokens[uid] + "\r\n"
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n" + body)))
	if err != nil {
		return 0, "", false
	}
	r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w.Code, w.Body.String(), true
}

// controlRoutes are broker.sock's routes that take a body; a "{}" in the
// path is replaced by the fuzzed module name.
var controlRoutes = []string{"/tokens", "/tokens/attenuate", "/tokens/revoke", "/tokens/introspect", "/modules/{}/run", "/modules/reload"}

// controlSel packs a route, a caller and whether the caller presents its
// token into a seed's selector byte.
func controlSel(route, caller int, bearer bool) uint8 {
	n := route + len(controlRoutes)*caller
	if bearer {
		n += len(controlRoutes) * len(controlCallers)
	}
	return uint8(n)
}

// FuzzControlRequest sends arbitrary bodies and module names (a raw path
// segment) to broker.sock's token and module routes in-process, as root
// (tokens are minted, attenuated and revoked; jobs run), as a daemon
// principal and as a uid without one, each with or without a bearer token
// of its own: never a panic, never a 5xx, and every error is aziot's
// {"message": "…"} with a 4xx status.
func FuzzControlRequest(f *testing.F) {
	e := newControlEnv(f)
	// Bodies name the env's tokens by placeholder: a token changes with
	// every run's key, and a 600-byte one in a body makes each minimization
	// (quadratic in the input's length) take the fuzzer's whole minute.
	tokens := strings.NewReplacer("$ROOT", e.tokens[0], "$DAEMON", e.tokens[uidDaemon], "$NOBODY", e.tokens[uidNobody])
	const root, daemon = "$ROOT", "$DAEMON"
	seeds := []struct {
		route, caller int
		bearer        bool
		name, body    string
	}{
		{0, 0, false, "", `{"capabilities":[{"resource":"key:a-1","ops":["sign"]}],"ttlSeconds":60}`},
		{0, 1, false, "", `{"capabilities":[{"resource":"key:a-*","ops":["sign","encrypt"]}]}`},
		{0, 1, true, "", `{"capabilities":[{"resource":"identity:*","ops":["get"]}]}`},
		{0, 2, false, "", `{"capabilities":[{"resource":"cert:x?y","ops":["create"]}],"ttlSeconds":-1}`},
		{0, 0, false, "", `{"capabilities":[{"resource":"","ops":[]}],"ttlSeconds":1e30}`},
		{0, 0, false, "", `{"capabilities":[],"ttlSeconds":9223372036854775807}`},
		// ttlSeconds*1s wrapped: 2^55+60 gave a 60 s token, 9223372037 a
		// negative lifetime.
		{0, 0, false, "", `{"capabilities":[{"resource":"key:a-1","ops":["sign"]}],"ttlSeconds":36028797018964028}`},
		{1, 0, false, "", `{"token":"` + root + `","capabilities":[{"resource":"key:a-1","ops":["sign"]}],"ttlSeconds":9223372037}`},
		{0, 0, false, "", `{"capabilities":[{"resource":"key:\u0000","ops":["sign"]}]}`},
		{1, 0, false, "", `{"token":"` + root + `","capabilities":[{"resource":"key:a-1","ops":["sign"]}],"uid":1000}`},
		{1, 1, false, "", `{"token":"` + daemon + `","capabilities":[{"resource":"key:a-*","ops":["sign"]}]}`},
		{1, 1, false, "", `{"token":"` + root + `","capabilities":[{"resource":"key:a-1","ops":["sign"]}]}`},
		{1, 0, false, "", `{"token":"` + root + `","capabilities":[{"resource":"key:b","ops":["sign"]}],"uid":-1}`},
		{1, 0, false, "", `{"token":"x.y.z","capabilities":null,"uid":null}`},
		{2, 0, false, "", `{"token":"` + root + `"}`},
		{2, 1, false, "", `{"token":"` + daemon + `","id":"other"}`},
		{2, 0, false, "", `{"id":"some-id"}`},
		{2, 2, false, "", `{"id":""}`},
		{3, 2, false, "", `{"token":"` + daemon + `"}`},
		{3, 2, false, "", `{"token":"$NOBODY"}`},
		{3, 0, true, "", `{"token":"eyJ.e30.AA"}`},
		{4, 0, false, "est", `{"op":"enroll"}`},
		{4, 0, false, "est", ``},
		{4, 0, false, "nope", `{}`},
		{4, 0, false, "a%2Fb", `{}`},
		{4, 0, false, "%ff", `{}`},
		{4, 1, true, "est", `[]`},
		{5, 0, false, "", `{"x":1}`},
		{0, 0, false, "", "{\"capabilities\":[]}\x00"},
		{0, 0, false, "", `[]`}, {1, 0, false, "", `null`}, {2, 0, false, "", `"x"`}, {3, 0, false, "", `{`},
		{2, 0, false, "", ``}, {1, 0, false, "", `{"ttlSeconds":"60"}`},
	}
	for _, s := range seeds {
		f.Add(controlSel(s.route, s.caller, s.bearer), s.name, s.body)
	}
	f.Fuzz(func(t *testing.T, sel uint8, name, body string) {
		n := int(sel)
		target := strings.Replace(controlRoutes[n%len(controlRoutes)], "{}", name, 1) + "?api-version=" + APIVersion
		n /= len(controlRoutes)
		uid := controlCallers[n%len(controlCallers)]
		bearer := n/len(controlCallers)%2 == 1
		what := "POST " + target + " " + strconv.Quote(body) + " as " + strconv.Itoa(int(uid))
		if bearer {
			what += " with its token"
		}
		// A hung call would only stall the fuzzer; a panic ends the worker
		// and the input is kept as a crasher.
		defer time.AfterFunc(30*time.Second, func() { panic("no answer in 30s: " + what) }).Stop()
		body = tokens.Replace(body)
		start := time.Now()
		status, answer, ok := e.serve(uid, bearer, "POST", target, body)
		switch {
		case ok && status == http.StatusOK && strings.HasPrefix(target, "/tokens?"):
			checkLifetime(t, what, body, answer, start)
			return
		case !ok:
			return
		}
		apitest.CheckAnswer(t, what, status, answer)
	})
}

// checkLifetime fails t unless a minted token lives the ttlSeconds asked
// for (the default hour for 0), to the second. It compares seconds as
// integers: a Duration could wrap just as the bug did.
func checkLifetime(t *testing.T, what, body, answer string, start time.Time) {
	t.Helper()
	var req mintRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("%s: minted from a body encoding/json refuses: %v", what, err)
	}
	var resp tokenResponse
	json.Unmarshal([]byte(answer), &resp)
	exp, err := time.Parse(time.RFC3339, resp.ExpiresAt)
	if err != nil {
		t.Fatalf("%s: expiresAt of %s: %v", what, answer, err)
	}
	want := req.TTLSeconds
	if want == 0 {
		want = int64(capabilities.DefaultTTL / time.Second)
	}
	if got := exp.Unix() - start.Unix(); got < want-2 || got > want+1 {
		t.Fatalf("%s: token lives %d s, asked %d s", what, got, req.TTLSeconds)
	}
}
