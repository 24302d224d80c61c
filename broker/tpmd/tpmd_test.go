package tpmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/tpm"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// fakeTPM answers with fixed values or errors.
type fakeTPM struct {
	ek, srk, mac []byte
	err          error
	gotBlob      []byte
	gotData      []byte
}

func (f *fakeTPM) Keys(context.Context) ([]byte, []byte, error) { return f.ek, f.srk, f.err }
func (f *fakeTPM) ImportAuthKey(_ context.Context, b []byte) error {
	f.gotBlob = b
	return f.err
}
func (f *fakeTPM) SignWithAuthKey(_ context.Context, d []byte) ([]byte, error) {
	f.gotData = d
	return f.mac, f.err
}

// fakeTokens verifies the tests' tokens: a map from token to claims.
type fakeTokens map[string]*capabilities.Claims

func (f fakeTokens) Verify(_ context.Context, tok string, uid uint32) (*capabilities.Claims, error) {
	if c, ok := f[tok]; ok && c.UID == uid {
		return c, nil
	}
	return nil, capabilities.ErrInvalid
}

// env is tpmd in-process with the default policy; logs go to logs (JSON).
type env struct {
	h    http.Handler
	logs *bytes.Buffer
	mu   *sync.Mutex
}

func newEnv(t testing.TB, newServer func(*api.Guard, *slog.Logger) *Server) *env {
	t.Helper()
	engine, err := policy.New(context.Background(), policy.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tokens := fakeTokens{"keys-only": {ID: "t1", UID: 1000, Expiry: time.Now().Add(time.Hour),
		Capabilities: []capabilities.Capability{{Resource: "tpm:keys", Ops: []string{"keys"}}}}}
	e := &env{logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	logger := slog.New(slog.NewJSONHandler(lockedWriter{e.logs, e.mu}, nil))
	s := newServer(api.NewGuard(tokens, engine, logger, nil), logger)
	e.h = s.Service().Handler()
	return e
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// do sends one request as uid 1000 and returns status and body.
func (e *env) do(method, target, body string, header ...string) (int, string) {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: 1000, GID: 1000, PID: 42}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w.Code, strings.TrimSpace(w.Body.String())
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

const v = "?api-version=2020-09-01"

func TestRoutes(t *testing.T) {
	f := &fakeTPM{ek: []byte("ek"), srk: []byte("srk"), mac: []byte("mac")}
	e := newEnv(t, func(g *api.Guard, l *slog.Logger) *Server { return NewWithTPM(f, g, l) })
	for _, tc := range []struct {
		name, method, target, body string
		header                     []string
		status                     int
		want                       string
	}{
		{"T1", "GET", "/get_tpm_keys" + v, "", nil, 200, `{"endorsement_key":"ZWs=","storage_root_key":"c3Jr"}`},
		{"T2", "POST", "/import_auth_key" + v, `{"key":"` + b64([]byte("blob")) + `"}`, nil, 200, `{}`},
		{"T3", "POST", "/sign_with_auth_key" + v, `{"data":"` + b64([]byte("sr\nse")) + `"}`, nil, 200, `{"digest":"bWFj"}`},
		{"T3 empty data", "POST", "/sign_with_auth_key" + v, `{"data":""}`, nil, 200, `{"digest":"bWFj"}`},
		{"no api-version", "GET", "/get_tpm_keys", "", nil, 400, `{"message":"api-version not specified"}`},
		{"newer api-version", "GET", "/get_tpm_keys?api-version=2021-05-01", "", nil, 400, `{"message":"invalid api-version \"2021-05-01\""}`},
		{"unknown path", "GET", "/tpm" + v, "", nil, 404, `{"message":"not found"}`},
		{"wrong method", "POST", "/get_tpm_keys" + v, "", nil, 400, `{"message":"method not allowed"}`},
		{"T2 no body", "POST", "/import_auth_key" + v, "", nil, 400, `{"message":"missing request body"}`},
		{"T2 no key", "POST", "/import_auth_key" + v, `{}`, nil, 422, "{\"message\":\"missing field `key`\"}"},
		{"T2 key not base64", "POST", "/import_auth_key" + v, `{"key":"!!"}`, nil, 422, ""},
		{"T3 no data", "POST", "/sign_with_auth_key" + v, `{"digest":"AA=="}`, nil, 422, "{\"message\":\"missing field `data`\"}"},
		{"T3 malformed JSON", "POST", "/sign_with_auth_key" + v, `{"data":`, nil, 422, ""},
		{"token covers T1", "GET", "/get_tpm_keys" + v, "", []string{"Authorization", "Bearer keys-only"}, 200, ""},
		{"token does not cover T3", "POST", "/sign_with_auth_key" + v, `{"data":"AA=="}`, []string{"Authorization", "Bearer keys-only"}, 401, `{"message":"authorization error"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(tc.method, tc.target, tc.body, tc.header...)
			if status != tc.status || (tc.want != "" && body != tc.want) {
				t.Fatalf("%d %s, want %d %s", status, body, tc.status, tc.want)
			}
		})
	}
	if string(f.gotBlob) != "blob" {
		t.Errorf("T2 passed %q to the TPM", f.gotBlob)
	}
}

// TestFailureShape: every TPM failure is 500 {"message":"internal error"};
// the log has the cause, the decoded response code and the problem tag.
func TestFailureShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		logs []string
	}{
		{"TPM response code", fmt.Errorf("sign with auth key: %w", &tpm.CommandError{Command: "TPM2_HMAC", RC: tpm2.TPMRC(0x18b)}),
			[]string{`"tpm_command":"TPM2_HMAC"`, `"tpm_rc":"0x18b"`, `"tpm_rc_name":"TPM_RC_HANDLE"`, `"tpm_rc_meaning":"the handle is not correct for the use (handle 1)"`}},
		{"no TPM", fmt.Errorf("get TPM keys: %w: cannot connect", tpm.ErrNoTPM), []string{`"problem":"no_tpm"`, `"check":"wardenctl check tpm"`}},
		{"hierarchy auth", fmt.Errorf("x: %w", tpm.ErrHierarchyAuth), []string{`"problem":"hierarchy_auth"`}},
		{"plain", errors.New("boom"), []string{`"err":"boom"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(g *api.Guard, l *slog.Logger) *Server { return NewWithTPM(&fakeTPM{err: tc.err}, g, l) })
			for _, r := range []struct{ method, target, body string }{
				{"GET", "/get_tpm_keys" + v, ""},
				{"POST", "/import_auth_key" + v, `{"key":"AA=="}`},
				{"POST", "/sign_with_auth_key" + v, `{"data":"AA=="}`},
			} {
				status, body := e.do(r.method, r.target, r.body)
				if status != 500 || body != `{"message":"internal error"}` {
					t.Fatalf("%s: %d %s", r.target, status, body)
				}
			}
			logs := e.logs.String()
			for _, want := range append(tc.logs, `"msg":"tpmd: could not get TPM keys"`, `"msg":"tpmd: could not import auth key"`, `"msg":"tpmd: could not sign with auth key"`) {
				if !strings.Contains(logs, want) {
					t.Errorf("log lacks %s:\n%s", want, logs)
				}
			}
		})
	}
}

// TestOnSWTPM: T1–T3 through the handler on swtpm, configured as wardend
// would be: the HMAC equals the emulator's.
func TestOnSWTPM(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	e := newEnv(t, func(g *api.Guard, l *slog.Logger) *Server {
		return New(config.TPM{TCTI: sw.TCTI(), AuthKeyIndex: 0x100}, g, l)
	})
	status, body := e.do("GET", "/get_tpm_keys"+v, "")
	var keys keysResponse
	if err := json.Unmarshal([]byte(body), &keys); status != 200 || err != nil {
		t.Fatalf("T1: %d %s %v", status, body, err)
	}
	a, err := emulator.NewTPMActivation(rand.Reader, keys.EndorsementKey, keys.StorageRootKey)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := e.do("POST", "/import_auth_key"+v, `{"key":"`+b64(a.Blob)+`"}`); status != 200 || body != "{}" {
		t.Fatalf("T2: %d %s", status, body)
	}
	data := []byte("myscope/registrations/device-1\n1700000000")
	status, body = e.do("POST", "/sign_with_auth_key"+v, `{"data":"`+b64(data)+`"}`)
	if want := `{"digest":"` + b64(a.Sign(data)) + `"}`; status != 200 || body != want {
		t.Fatalf("T3: %d %s, want %s", status, body, want)
	}
}
