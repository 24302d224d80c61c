package identityd

import (
	"context"
	"crypto"
	"encoding/base64"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/host"
)

var (
	wasmOnce sync.Once
	wasmDir  string
	wasmErr  error
)

// buildModules builds the dps and hub modules once per test binary.
func buildModules(t *testing.T) string {
	t.Helper()
	wasmOnce.Do(func() {
		wasmDir, wasmErr = os.MkdirTemp("", "identityd-wasm-")
		if wasmErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		for _, m := range []string{"dps", "hub"} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(wasmDir, m+".wasm"), "./wasm-modules/"+m)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				wasmErr = &buildError{string(out)}
				return
			}
		}
	})
	if wasmErr != nil {
		t.Fatal(wasmErr)
	}
	return wasmDir
}

type buildError struct{ out string }

func (e *buildError) Error() string { return "building modules: " + e.out }

type allowAll struct{}

func (allowAll) Decide(context.Context, *policy.Input) (policy.Decision, error) {
	return policy.Decision{Allow: true}, nil
}

// certMap is a cert store holding the emulator's CA.
type certMap map[string][]byte

func (c certMap) Get(_ context.Context, id string) ([]byte, error) {
	if b, ok := c[id]; ok {
		return b, nil
	}
	return nil, host.ErrNotFound
}
func (c certMap) Put(context.Context, string, []byte) error { return nil }

// rig is an emulator, a key store, a module host and a state dir.
type rig struct {
	emu   *emulator.Emulator
	keys  *hsm.Keys
	host  *host.Host
	dir   string
	keyFS string
	certs certMap
}

func newRig(t *testing.T, opts emulator.Options) *rig {
	t.Helper()
	return newRigTPM(t, opts, nil)
}

// newRigTPM is newRig with a TPM for the modules.
func newRigTPM(t *testing.T, opts emulator.Options, tpm host.TPM) *rig {
	t.Helper()
	wasm := buildModules(t)
	ctx := context.Background()
	emu, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	r := &rig{emu: emu, dir: t.TempDir(), certs: certMap{CloudTrustCertID: emu.CACertPEM()}}
	r.keyFS = filepath.Join(r.dir, "keys-src")
	os.MkdirAll(r.keyFS, 0o700)
	r.openKeys(t, nil)
	h, err := host.New(host.Options{CacheDir: filepath.Join(os.TempDir(), "identityd-test-module-cache"),
		Keys: rigKeys{r}, Certs: r.certs, TPM: tpm, Decider: allowAll{},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	var mods []host.ModuleConfig
	for _, m := range []string{"dps", "hub"} {
		mods = append(mods, host.ModuleConfig{Name: m, Path: filepath.Join(wasm, m+".wasm"), SHA256: sha256File(t, filepath.Join(wasm, m+".wasm")),
			Egress: []string{"localhost"}, Limits: host.Limits{Timeout: 2 * time.Minute}})
	}
	if err := h.Load(ctx, mods); err != nil {
		t.Fatal(err)
	}
	r.host = h
	return r
}

// rigKeys is the host's key store: the rig's current one (openKeys
// reopens it), the store identityd uses, as in wardend.
type rigKeys struct{ r *rig }

func (k rigKeys) CreateKeyPair(ctx context.Context, id string, algs []hsm.Algorithm) error {
	return k.r.keys.CreateKeyPair(ctx, id, algs)
}

func (k rigKeys) PublicKey(ctx context.Context, id string) (crypto.PublicKey, error) {
	return k.r.keys.PublicKey(ctx, id)
}

func (k rigKeys) Signer(ctx context.Context, id string) (crypto.Signer, error) {
	return k.r.keys.Signer(ctx, id)
}

func (k rigKeys) HMACSHA256(ctx context.Context, id string, msg []byte) ([]byte, error) {
	return k.r.keys.HMACSHA256(ctx, id, msg)
}

func (r *rig) openKeys(t *testing.T, preloaded map[string]string) {
	t.Helper()
	if r.keys != nil {
		r.keys.Close()
	}
	k, err := hsm.Open(context.Background(), hsm.Config{HomeDir: filepath.Join(r.dir, "keystore"), Preloaded: preloaded})
	if err != nil {
		t.Fatal(err)
	}
	r.keys = k
	t.Cleanup(func() { k.Close() })
}

// server returns an identityd over the rig with cfg, started.
func (r *rig) server(t *testing.T, cfg *config.Config) (*Server, error) {
	t.Helper()
	if cfg.PreloadedCerts == nil {
		cfg.PreloadedCerts = map[string]config.PreloadedCert{}
	}
	cfg.PreloadedCerts[CloudTrustCertID] = config.PreloadedCert{URI: "file:///unused"}
	cfg.CloudTimeoutSec = 70
	s, err := New(nil, cfg, Options{Keys: r.keys, Handles: hsm.NewHandles(r.keys), Modules: r.host,
		StateDir: filepath.Join(r.dir, "identity"), Logger: slog.New(slog.DiscardHandler), PollMS: -1, ThrottleMS: []int{10, 10, 10, 10}})
	if err != nil {
		t.Fatal(err)
	}
	return s, s.Start(context.Background())
}

// dpsConfig is DPS symmetric-key attestation with the key by value.
func (r *rig) dpsConfig(regID, key string, modules ...string) *config.Config {
	cfg := &config.Config{Provisioning: &config.Provisioning{Source: "dps", GlobalEndpoint: r.emu.URL(), IDScope: r.emu.IDScope(),
		Attestation: &config.Attestation{Method: "symmetric_key", RegistrationID: &config.RegistrationID{Name: regID},
			SymmetricKey: &config.SymmetricKey{Value: key}}}}
	cfg.PreloadedCerts = map[string]config.PreloadedCert{CloudTrustCertID: {URI: "file:///unused"}}
	for i, m := range modules {
		cfg.Principals = append(cfg.Principals, config.Principal{UID: uint32(2000 + i), Name: m, IDType: []string{"module"}})
	}
	return cfg
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out[:64])
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
