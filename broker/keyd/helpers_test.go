package keyd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// Callers of the in-process tests: root, and uid A whose principal may use
// the keys "a-*" (as in the conformance suite).
const (
	root = 0
	uidA = 1000
)

// fakeTokens verifies the tokens of the tests: a map from token to claims.
type fakeTokens map[string]*capabilities.Claims

func (f fakeTokens) Verify(_ context.Context, tok string, uid uint32) (*capabilities.Claims, error) {
	c, ok := f[tok]
	if !ok {
		return nil, capabilities.ErrInvalid
	}
	if c.UID != uid {
		return nil, capabilities.ErrWrongUID
	}
	return c, nil
}

// env is keyd served in-process over a file store in a temp dir, with the
// default policy.
type env struct {
	t      *testing.T
	server *Server
	h      http.Handler
	keys   *hsm.Keys
	tokens fakeTokens
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, Options{}, nil)
}

// newEnvWith is newEnv with keyd options and, when wrap is set, the
// policy engine wrapped by it.
func newEnvWith(t testing.TB, opts Options, wrap func(api.Decider) api.Decider) *env {
	t.Helper()
	ctx := context.Background()
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	engine, err := policy.New(ctx, policy.Options{
		Principals: []policy.Principal{{UID: uidA, Name: "agent-a", Keys: []string{"a-*"}}},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	tokens := fakeTokens{}
	var decider api.Decider = engine
	if wrap != nil {
		decider = wrap(engine)
	}
	guard := api.NewGuard(tokens, decider, slog.New(slog.DiscardHandler), nil)
	s := New(keys, hsm.NewHandles(keys), guard, slog.New(slog.DiscardHandler), opts)
	tt, _ := t.(*testing.T)
	return &env{t: tt, server: s, h: s.Service().Handler(), keys: keys, tokens: tokens}
}

// resp is an answer of the handler.
type resp struct {
	status int
	body   string
}

func (r resp) message() string {
	var m struct{ Message string }
	json.Unmarshal([]byte(r.body), &m)
	return m.Message
}

// field returns the string member name of a JSON object body.
func (r resp) field(name string) string {
	var m map[string]any
	json.Unmarshal([]byte(r.body), &m)
	s, _ := m[name].(string)
	return s
}

func (r resp) bytes(name string) []byte {
	b, _ := base64.StdEncoding.DecodeString(r.field(name))
	return b
}

// call sends method target with body (JSON unless "") as uid, with the
// bearer token tok when not "".
func (e *env) call(uid uint32, tok, method, target, body string) resp {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
	}
	if !strings.Contains(target, "api-version=") {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		r.URL.RawQuery = strings.TrimPrefix(r.URL.RawQuery+sep+"api-version=2021-05-01", "?")
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return resp{status: w.Code, body: w.Body.String()}
}

func (e *env) post(target string, body any) resp {
	return e.call(root, "", http.MethodPost, target, jsonBody(body))
}

func jsonBody(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// handle returns the keyHandle of a 200, failing the test otherwise.
func (e *env) handle(r resp) string {
	e.t.Helper()
	if r.status != http.StatusOK || r.field("keyHandle") == "" {
		e.t.Fatalf("want 200 with a keyHandle, got %d %s", r.status, r.body)
	}
	return r.field("keyHandle")
}

func (e *env) keyPair(id, algs string) string {
	e.t.Helper()
	body := map[string]any{"keyId": id}
	if algs != "" {
		body["preferredAlgorithms"] = algs
	}
	return e.handle(e.post("/keypair", body))
}

func (e *env) importKey(id string, key []byte) string {
	e.t.Helper()
	return e.handle(e.post("/key", map[string]any{"keyId": id, "usage": "derive,sign,encrypt", "keyBytes": key}))
}

// token registers a token for uid with caps and returns it.
func (e *env) token(uid uint32, caps ...capabilities.Capability) string {
	tok := fmt.Sprintf("tok-%d", len(e.tokens))
	e.tokens[tok] = &capabilities.Claims{ID: tok, Subject: "t", UID: uid, Expiry: time.Now().Add(time.Hour), Capabilities: caps}
	return tok
}

// check is one expected answer: status and, when set, the exact message.
type check struct {
	status  int
	message string
}

func (c check) verify(t *testing.T, r resp) {
	t.Helper()
	if r.status != c.status {
		t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
	}
	if c.message != "" && r.message() != c.message {
		t.Fatalf("message %q, want %q", r.message(), c.message)
	}
	if r.status >= 400 {
		var m map[string]any
		if err := json.Unmarshal([]byte(r.body), &m); err != nil || len(m) != 1 || m["message"] == "" {
			t.Fatalf("error body is not aziot's {\"message\"}: %s", r.body)
		}
	}
}

// Messages of aziot that the tests expect.
const (
	msgInvalidHandle = "parameter \"handle\" has an invalid value\ncaused by: invalid handle"
	msgBadParameter  = "a parameter has an invalid value"
	msgMechanism     = "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type"
	msgNotKey        = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key"
	msgNotKeyPair    = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key pair"
	msgNotDerived    = "parameter \"handle\" has an invalid value\ncaused by: handle is not for a derived key"
	msgNested        = "parameter \"handle\" has an invalid value\ncaused by: nested derived keys are not supported, import the outer derived key first"
)
