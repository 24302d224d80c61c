package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// fakeModules is a module host with one module, "est".
type fakeModules struct {
	reloadErr error
	reloads   int
	lastJob   []byte
}

func (f *fakeModules) Modules() []host.ModuleStatus {
	return []host.ModuleStatus{{Name: "est", Digest: "sha256:ab", Loaded: true, Signature: "none", Jobs: 1}}
}

func (f *fakeModules) Reload(context.Context) error {
	f.reloads++
	return f.reloadErr
}

func (f *fakeModules) Run(_ context.Context, name string, in []byte) (*host.Result, error) {
	f.lastJob = in
	switch name {
	case "est":
		return &host.Result{Module: name, Digest: "sha256:ab", Output: json.RawMessage(`{"pem":"x"}`), Duration: 3 * time.Millisecond, HostCalls: 2}, nil
	case "broken":
		return nil, fmt.Errorf("module %q: %w: %w", name, host.ErrUnavailable, host.ErrIntegrity)
	case "failing":
		return &host.Result{Module: name, Digest: "sha256:cd"}, &host.JobError{Module: name, Kind: host.ErrModuleError, Err: guest.Errorf("retry", "later")}
	}
	return nil, fmt.Errorf("module %q: %w", name, host.ErrUnknownModule)
}

// rootOnly is the default policy's rule for the module API.
type rootOnly struct{ actions []policy.Action }

func (d *rootOnly) Decide(_ context.Context, in *policy.Input) (policy.Decision, error) {
	d.actions = append(d.actions, in.Action)
	return policy.Decision{Allow: in.Caller.UID == 0, Reasons: []string{"test"}}, nil
}

func TestModuleRoutes(t *testing.T) {
	dec := &rootOnly{}
	guard := api.NewGuard(nil, dec, slog.New(slog.DiscardHandler), nil)
	s := New(nil, guard, slog.New(slog.DiscardHandler), func() string { return "rev" })
	mods := &fakeModules{}
	svc := s.Service()
	svc.Routes = append(svc.Routes, s.ModuleRoutes(mods)...)
	h := svc.Handler()
	do := func(uid uint32, method, path, body string) (int, map[string]any) {
		r := httptest.NewRequest(method, path+"?api-version="+APIVersion, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var out map[string]any
		json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	tests := []struct {
		name   string
		uid    uint32
		method string
		path   string
		body   string
		status int
		check  func(t *testing.T, out map[string]any)
	}{
		{"list", 0, "GET", "/modules", "", 200, func(t *testing.T, out map[string]any) {
			ms := out["modules"].([]any)
			if len(ms) != 1 || ms[0].(map[string]any)["digest"] != "sha256:ab" {
				t.Errorf("%v", out)
			}
		}},
		{"list denied", 1000, "GET", "/modules", "", 401, nil},
		{"reload", 0, "POST", "/modules/reload", "", 200, func(t *testing.T, out map[string]any) {
			if out["errors"] != nil || mods.reloads != 1 {
				t.Errorf("%v, %d reloads", out, mods.reloads)
			}
		}},
		{"reload denied", 1000, "POST", "/modules/reload", "", 401, nil},
		{"run", 0, "POST", "/modules/est/run", `{"op":"enroll"}`, 200, func(t *testing.T, out map[string]any) {
			if out["ok"] != true || out["output"].(map[string]any)["pem"] != "x" || out["hostCalls"] != 2.0 || string(mods.lastJob) != `{"op":"enroll"}` {
				t.Errorf("%v", out)
			}
		}},
		{"run without a body", 0, "POST", "/modules/est/run", "", 200, nil},
		{"run denied", 1000, "POST", "/modules/est/run", "{}", 401, nil},
		{"run a failing job", 0, "POST", "/modules/failing/run", "{}", 200, func(t *testing.T, out map[string]any) {
			if out["ok"] != false || out["kind"] != "module" || out["code"] != "retry" || !strings.Contains(out["error"].(string), "later") {
				t.Errorf("%v", out)
			}
		}},
		{"run an unknown module", 0, "POST", "/modules/nope/run", "{}", 404, nil},
		{"run a refused module", 0, "POST", "/modules/broken/run", "{}", 503, func(t *testing.T, out map[string]any) {
			if !strings.Contains(out["message"].(string), "integrity") {
				t.Errorf("%v", out)
			}
		}},
		{"run with bad JSON", 0, "POST", "/modules/est/run", "{", 422, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, out := do(tc.uid, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, out)
			}
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
	mods.reloadErr = errors.Join(errors.New("module a: bad"), errors.New("module b: worse"))
	status, out := do(0, "POST", "/modules/reload", "")
	if errs, _ := out["errors"].([]any); status != 200 || len(errs) != 2 {
		t.Fatalf("reload with refusals: %d %v", status, out)
	}
	want := map[string]bool{"list modules": true, "reload modules": true, "run module:est": true}
	for _, a := range dec.actions {
		if a.Service != "modules" || !want[a.Operation+" "+a.Resource] && !strings.HasPrefix(a.Resource, "module:") {
			t.Errorf("action %+v", a)
		}
	}
}
