package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/cloud/cloudtest"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

// TestMissingClientCertIsNotNetwork: a registry call whose TLS client
// certificate or key is missing from the stores (http.do fails
// not_found) is not a network error: identityd would keep serving from
// backups, taking it for the hub being unreachable.
func TestMissingClientCertIsNotNetwork(t *testing.T) {
	in, _ := json.Marshal(hubjob.Job{Op: hubjob.OpList, URL: "https://hub.example", DeviceID: "dev-1",
		TLS: &guest.TLSOptions{ClientCertID: "device-id", ClientKeyID: "device-id"}})
	h := &cloudtest.Host{Answers: cloudtest.Parse("!not_found"), MaxCalls: 20}
	_, err := cloudtest.Invoke(t, h, handle, in)
	var ge *guest.Error
	if !errors.As(err, &ge) || ge.Code != guest.CodeNotFound {
		t.Fatalf("err = %v, want code %q", err, guest.CodeNotFound)
	}
}

// TestLongErrorKeepsItsCode runs the module as WASM under the real host
// against a hub (or parent edgeHub) whose 503 carries a 1.5 MiB Message:
// the job must still fail "network", so identityd keeps serving from
// backups. The whole message in the job's error would pass the host's
// 1 MiB output limit and the job would fail "output", with no code.
func TestLongErrorKeepsItsCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		json.NewEncoder(w).Encode(map[string]string{"Message": strings.Repeat("upstream unavailable ", 75_000)})
	}))
	defer srv.Close()
	wasm := filepath.Join(t.TempDir(), "hub.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", wasm, ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	h, err := host.New(host.Options{Decider: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	if err := h.Load(context.Background(), []host.ModuleConfig{{Name: "hub", Path: wasm, Egress: []string{"127.0.0.1"}, SHA256: sha256File(t, wasm)}}); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(hubjob.Job{Op: hubjob.OpGet, URL: srv.URL, DeviceID: "d1", ModuleID: "m1", Authorization: "SharedAccessSignature sr=x"})
	_, err = h.Run(context.Background(), "hub", in)
	var ge *guest.Error
	if !errors.As(err, &ge) || ge.Code != hubjob.CodeNetwork {
		t.Fatalf("err = %.300v, want code %q", err, hubjob.CodeNetwork)
	}
}

// TestThrottled: a 429 is backed off (Retry-After when given, else 5, 10,
// 20 s) and the request sent again; a hub that keeps throttling is
// "network", so identityd serves from backups rather than registering
// again with DPS.
func TestThrottled(t *testing.T) {
	job, _ := json.Marshal(hubjob.Job{Op: hubjob.OpList, URL: "https://hub.example", DeviceID: "dev-1", Authorization: "SharedAccessSignature sr=x"})
	for _, tc := range []struct {
		name   string
		script string
		code   string
		sleeps []time.Duration
	}{
		{"Retry-After, then an answer", "429 2\n\n200\n[]", "", []time.Duration{2 * time.Second}},
		{"a long Retry-After is capped", "429 86400\n\n200\n[]", "", []time.Duration{time.Minute}},
		{"throttled throughout", "429\n\n429\n\n429\n\n429", hubjob.CodeNetwork, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &cloudtest.Host{Answers: cloudtest.Parse(tc.script), MaxCalls: 50}
			_, err := cloudtest.Invoke(t, h, handle, job)
			var ge *guest.Error
			if tc.code == "" && err != nil || tc.code != "" && (!errors.As(err, &ge) || ge.Code != tc.code) {
				t.Fatalf("err = %v, want code %q", err, tc.code)
			}
			if got := h.Sleeps(); !slices.Equal(got, tc.sleeps) {
				t.Fatalf("sleeps %v, want %v", got, tc.sleeps)
			}
		})
	}
}
