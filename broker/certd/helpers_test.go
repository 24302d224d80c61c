package certd

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// Callers of the in-process tests: root, and uid A whose principal may
// modify the certs "a-*" and "agent/module/*".
const (
	root = 0
	uidA = 1000
)

type fakeTokens map[string]*capabilities.Claims

func (f fakeTokens) Verify(_ context.Context, tok string, uid uint32) (*capabilities.Claims, error) {
	c, ok := f[tok]
	if !ok {
		return nil, capabilities.ErrInvalid
	}
	return c, nil
}

// env is certd served in-process over a file key store and the default
// policy, configured by a TOML snippet.
type env struct {
	t       testing.TB
	dir     string
	server  *Server
	h       http.Handler
	keys    *hsm.Keys
	handles *hsm.Handles
}

// newEnv writes extra (TOML, may use %[1]s for the temp dir) after the
// [warden] table and starts certd on it.
func newEnv(t testing.TB, extra string) *env {
	t.Helper()
	dir := t.TempDir()
	cfgText := fmt.Sprintf("[warden]\nstate_dir = %q\nsocket_dir = %q\n", filepath.Join(dir, "state"), filepath.Join(dir, "run")) +
		strings.ReplaceAll(extra, "%[1]s", dir)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: filepath.Join(dir, "state"), Preloaded: PreloadedKeys(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	engine, err := policy.New(ctx, policy.Options{
		Principals: []policy.Principal{{UID: uidA, Certs: []string{"a-*", "agent/module/*"}}},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	guard := api.NewGuard(fakeTokens{}, engine, slog.New(slog.DiscardHandler), nil)
	handles := hsm.NewHandles(keys)
	s, err := New(cfg, keys, handles, guard, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, server: s, h: s.Service().Handler(), keys: keys, handles: handles}
}

type resp struct {
	status int
	body   string
}

func (r resp) message() string {
	var m struct{ Message string }
	json.Unmarshal([]byte(r.body), &m)
	return m.Message
}

func (r resp) pem() string {
	var m struct{ PEM string }
	json.Unmarshal([]byte(r.body), &m)
	return m.PEM
}

// call sends method target with body (JSON unless "") as uid.
func (e *env) call(uid uint32, method, target, body string) resp {
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
		r.URL.RawQuery = strings.TrimPrefix(r.URL.RawQuery+sep+"api-version=2020-09-01", "?")
	}
	r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return resp{status: w.Code, body: w.Body.String()}
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

// keyPair creates key pair id in the store and returns its signer and a
// key handle for it.
func (e *env) keyPair(id string) (crypto.Signer, string) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.keys.CreateKeyPair(ctx, id, []hsm.Algorithm{hsm.ECP256}); err != nil {
		e.t.Fatal(err)
	}
	s, err := e.keys.Signer(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := e.handles.Issue(ctx, hsm.KeyRef{Kind: hsm.KindKeyPair, ID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return s, h
}

// csrPEM builds a PEM CSR for signer with CN cn.
func csrPEM(t testing.TB, signer crypto.Signer, cn string, o certs.CSROptions) string {
	t.Helper()
	subj, err := certs.Subject(cn, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Subject = subj
	der, err := certs.NewCSR(signer, o)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func chain(t testing.TB, pemText string) []*x509.Certificate {
	t.Helper()
	c, err := certs.ParseChain([]byte(pemText))
	if err != nil {
		t.Fatalf("%v: %q", err, pemText)
	}
	return c
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
