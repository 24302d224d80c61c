package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
	"github.com/warden-iot/warden/wasm-modules/host"
)

var (
	wasmOnce sync.Once
	wasmDir  string
	wasmErr  error
)

// moduleWasm builds this module for GOOS=wasip1 once per test binary.
func moduleWasm(t testing.TB) string {
	t.Helper()
	wasmOnce.Do(func() {
		wasmDir, wasmErr = os.MkdirTemp("", "warden-est-module-")
		if wasmErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(wasmDir, "est.wasm"), ".")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			wasmErr = &buildError{string(out), err}
		}
	})
	if wasmErr != nil {
		t.Fatal(wasmErr)
	}
	return filepath.Join(wasmDir, "est.wasm")
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "build est.wasm: " + e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if wasmDir != "" {
		os.RemoveAll(wasmDir)
	}
	os.Exit(code)
}

// allowAll decides every host call as allowed (the rig tests the module,
// not the policy).
type allowAll struct{}

func (allowAll) Decide(context.Context, *policy.Input) (policy.Decision, error) {
	return policy.Decision{Allow: true}, nil
}

// storeCerts adapts a certs.Store to host.CertStore.
type storeCerts struct{ s *certs.Store }

func (c storeCerts) Get(_ context.Context, id string) ([]byte, error) { return c.s.Get(id) }
func (c storeCerts) Put(_ context.Context, id string, pem []byte) error {
	return c.s.Put(id, pem)
}

// rig is the module under the real host, with a file key store, a cert
// store holding the EST server's CA as "est-ca", and the EST peer.
type rig struct {
	host  *host.Host
	keys  *hsm.Keys
	store *certs.Store
	est   *estpeer.Server
}

func newRig(t testing.TB, o estpeer.Options) *rig {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	store, err := certs.OpenStore(filepath.Join(dir, "certs"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := estpeer.Start(t, o)
	if err := store.Put("est-ca", srv.CAPEM()); err != nil {
		t.Fatal(err)
	}
	path := moduleWasm(t)
	h, err := host.New(host.Options{CacheDir: filepath.Join(wasmDir, "cache"), Keys: keys,
		Certs: storeCerts{store}, Decider: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	b, _ := os.ReadFile(path)
	sum := sha256.Sum256(b)
	if err := h.Load(ctx, []host.ModuleConfig{{Name: "est", Path: path, SHA256: hex.EncodeToString(sum[:]), Egress: []string{srv.Addr}}}); err != nil {
		t.Fatal(err)
	}
	return &rig{host: h, keys: keys, store: store, est: srv}
}

// runner runs a job of the module: as WASM (native false) or its source
// in-process against the same host calls (native true).
func (r *rig) run(ctx context.Context, native bool, job *estjob.Job) (*estjob.Result, error) {
	in, _ := json.Marshal(job)
	var res *host.Result
	var err error
	if native {
		res, err = r.host.RunNative(ctx, "est", handle, in)
	} else {
		res, err = r.host.Run(ctx, "est", in)
	}
	if err != nil {
		return nil, err
	}
	var out estjob.Result
	if err := json.Unmarshal(res.Output, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
