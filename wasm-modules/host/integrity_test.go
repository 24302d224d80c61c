package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// signFile writes path+".sig" (base64) and returns the signature.
func signFile(t testing.TB, priv ed25519.PrivateKey, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(priv, b)
	if err := os.WriteFile(path+".sig", []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestIntegrity(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	path, sum := copyModule(t, wasmOf(t, "probe"), dir, "m.wasm")
	sig := signFile(t, priv, path)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	pemPath := filepath.Join(dir, "key.pem")
	os.WriteFile(pemPath, []byte(pemKey), 0o644)
	rawPath := filepath.Join(dir, "key.raw")
	os.WriteFile(rawPath, pub, 0o644)
	reactor, _ := copyModule(t, wasmOf(t, "reactor"), dir, "reactor.wasm")
	b64 := base64.StdEncoding.EncodeToString
	wrongSig := ed25519.Sign(otherPriv, []byte("something else"))

	tests := []struct {
		name    string
		cfg     ModuleConfig
		wantErr string // "" means loaded
		signed  bool
	}{
		{"sha256 pin", ModuleConfig{SHA256: sum}, "", false},
		{"sha256 pin upper case", ModuleConfig{SHA256: strings.ToUpper(sum)}, "", false},
		{"sha256 mismatch", ModuleConfig{SHA256: strings.Repeat("0", 64)}, "the configuration pins sha256:000", false},
		{"nothing pinned", ModuleConfig{}, "neither sha256 nor signature", false},
		{"signature inline, key base64", ModuleConfig{Signature: b64(sig), TrustedKeys: []string{b64(pub)}}, "", true},
		{"signature file, key PEM file", ModuleConfig{Signature: path + ".sig", TrustedKeys: []string{pemPath}}, "", true},
		{"signature raw url base64, key raw file", ModuleConfig{Signature: base64.RawURLEncoding.EncodeToString(sig), TrustedKeys: []string{rawPath}}, "", true},
		{"second trusted key verifies", ModuleConfig{Signature: b64(sig), TrustedKeys: []string{b64(otherPub), pemKey}}, "", true},
		{"signature and pin", ModuleConfig{SHA256: sum, Signature: b64(sig), TrustedKeys: []string{b64(pub)}}, "", true},
		{"signature good, pin wrong", ModuleConfig{SHA256: strings.Repeat("1", 64), Signature: b64(sig), TrustedKeys: []string{b64(pub)}}, "pins sha256", false},
		{"signature by an untrusted key", ModuleConfig{Signature: b64(sig), TrustedKeys: []string{b64(otherPub)}}, "not valid under any of the 1 trusted keys", false},
		{"signature of other bytes", ModuleConfig{Signature: b64(wrongSig), TrustedKeys: []string{b64(otherPub)}}, "not valid", false},
		{"signature without trusted keys", ModuleConfig{Signature: b64(sig)}, "no trusted_keys", false},
		{"signature garbage", ModuleConfig{Signature: "not-a-signature", TrustedKeys: []string{b64(pub)}}, "want base64", false},
		{"trusted key garbage", ModuleConfig{Signature: b64(sig), TrustedKeys: []string{"xyz"}}, "trusted key 0", false},
		{"missing signature file", ModuleConfig{Signature: filepath.Join(dir, "nope.sig"), TrustedKeys: []string{b64(pub)}}, "no such file", false},
		{"missing module file", ModuleConfig{Path: filepath.Join(dir, "nope.wasm"), SHA256: sum}, "no such file", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(Options{CacheDir: sharedCache(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close(context.Background())
			cfg := tc.cfg
			cfg.Name = "m"
			if cfg.Path == "" {
				cfg.Path = path
			}
			err = h.Load(context.Background(), []ModuleConfig{cfg})
			st, _ := h.Module("m")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load = %v, want an error containing %q", err, tc.wantErr)
				}
				if st.Loaded || !strings.Contains(st.Error, tc.wantErr) {
					t.Fatalf("status %+v", st)
				}
				if _, err := h.Run(context.Background(), "m", nil); !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Run of a refused module = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !st.Loaded || st.Digest != "sha256:"+sum || (st.Signature == "verified") != tc.signed {
				t.Fatalf("status %+v", st)
			}
			if tc.signed && st.SignatureKey != Fingerprint(pub) {
				t.Fatalf("signature key %s, want %s", st.SignatureKey, Fingerprint(pub))
			}
		})
	}
	t.Run("reactor refused", func(t *testing.T) {
		h, _ := New(Options{CacheDir: sharedCache(t)})
		defer h.Close(context.Background())
		sum := sha256File(t, reactor)
		err := h.Load(context.Background(), []ModuleConfig{{Name: "r", Path: reactor, SHA256: sum}})
		if err == nil || !strings.Contains(err.Error(), "WASI reactor") {
			t.Fatalf("Load = %v", err)
		}
	})
	t.Run("integrity errors are ErrIntegrity", func(t *testing.T) {
		h, _ := New(Options{CacheDir: sharedCache(t)})
		defer h.Close(context.Background())
		err := h.Load(context.Background(), []ModuleConfig{{Name: "m", Path: path, SHA256: strings.Repeat("2", 64)}})
		if !errors.Is(err, ErrIntegrity) {
			t.Fatalf("err = %v", err)
		}
		_, err = h.Run(context.Background(), "m", nil)
		if !errors.Is(err, ErrIntegrity) || !errors.Is(err, ErrUnavailable) || Kind(err) != "unavailable" {
			t.Fatalf("Run err = %v", err)
		}
	})
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	_, sum := copyModule(t, p, t.TempDir(), "x")
	return sum
}

// TestSwapAndReload swaps the module file: the next job runs the new
// version, a job running during the reload finishes on the old one, and a
// file that fails verification leaves the old version serving.
func TestSwapAndReload(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f := newFixture(t, nil, nil)
	signFile(t, priv, f.path)
	cfg := f.cfg
	cfg.SHA256 = ""
	cfg.Signature = f.path + ".sig"
	cfg.TrustedKeys = []string{base64.StdEncoding.EncodeToString(pub)}
	cfg.Limits.Timeout = 10 * time.Second
	ctx := context.Background()
	if err := f.h.Load(ctx, []ModuleConfig{cfg}); err != nil {
		t.Fatal(err)
	}
	version := func() string {
		t.Helper()
		res, err := f.h.Run(ctx, "probe", steps(map[string]any{"op": "version"}))
		if err != nil {
			t.Fatal(err)
		}
		return parseProbe(t, res).Version
	}
	if v := version(); v != "v1" {
		t.Fatalf("version %s", v)
	}
	v1, _ := f.h.Module("probe")

	// A slow job holds v1 while the file is swapped and reloaded.
	type out struct {
		res *Result
		err error
	}
	slow := make(chan out, 1)
	go func() {
		res, err := f.h.Run(ctx, "probe", steps(call(guest.OpClockSleep, guest.SleepRequest{Milliseconds: 1500}), map[string]any{"op": "version"}))
		slow <- out{res, err}
	}()
	waitRunning(t, f.h, 1)

	copyModule(t, wasmOf(t, "probe-v2"), f.dir, "probe.wasm")
	signFile(t, priv, f.path)
	if err := f.h.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if v := version(); v != "v2" {
		t.Fatalf("after reload: version %s", v)
	}
	o := <-slow
	if o.err != nil || parseProbe(t, o.res).Version != "v1" || o.res.Digest != v1.Digest {
		t.Fatalf("the running job: %v, %+v", o.err, o.res)
	}
	v2, _ := f.h.Module("probe")
	if v2.Digest == v1.Digest || !v2.LoadedAt.After(*v1.LoadedAt) {
		t.Fatalf("status v1 %+v, v2 %+v", v1, v2)
	}

	// Reload without a change keeps the version (no recompile).
	if err := f.h.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.h.Module("probe"); !st.LoadedAt.Equal(*v2.LoadedAt) {
		t.Fatalf("an unchanged reload replaced the version")
	}

	// A swapped file with a stale signature is refused; v2 keeps serving.
	copyModule(t, wasmOf(t, "probe"), f.dir, "probe.wasm")
	err := f.h.Reload(ctx)
	if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload of a tampered file: %v", err)
	}
	if v := version(); v != "v2" {
		t.Fatalf("after a refused reload: version %s", v)
	}
	if st, _ := f.h.Module("probe"); st.Error == "" || st.Digest != v2.Digest {
		t.Fatalf("status %+v", st)
	}

	// A new pin (config change) that the file does not meet drops the module.
	bad := cfg
	bad.Signature, bad.TrustedKeys, bad.SHA256 = "", nil, strings.Repeat("3", 64)
	if err := f.h.Load(ctx, []ModuleConfig{bad}); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("load with a new pin: %v", err)
	}
	if _, err := f.h.Run(ctx, "probe", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("run after a refused new pin: %v", err)
	}
	// Removing a module from the config removes it.
	if err := f.h.Load(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Run(ctx, "probe", nil); !errors.Is(err, ErrUnknownModule) || len(f.h.Modules()) != 0 {
		t.Fatalf("run after removal: %v", err)
	}
}

func waitRunning(t *testing.T, h *Host, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st, _ := h.Module("probe"); st.Running >= n {
			return
		}
	}
	t.Fatalf("no job running")
}

func TestCompilationCacheOnDisk(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	path, sum := copyModule(t, wasmOf(t, "probe"), dir, "m.wasm")
	load := func() time.Duration {
		h, err := New(Options{CacheDir: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close(context.Background())
		start := time.Now()
		if err := h.Load(context.Background(), []ModuleConfig{{Name: "m", Path: path, SHA256: sum}}); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	cold := load()
	var files int
	filepath.Walk(cache, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			files++
		}
		return nil
	})
	if files == 0 {
		t.Fatal("the compilation cache directory is empty")
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir mode: %v %v", fi.Mode(), err)
	}
	warm := load()
	t.Logf("load: cold %v, from the disk cache %v", cold, warm)
}

func TestParseEgress(t *testing.T) {
	tests := []struct {
		rule    string
		url     string
		allowed bool
	}{
		{"est.example.org", "https://est.example.org/x", true},
		{"est.example.org", "https://EST.Example.org.:8443/x", true},
		{"est.example.org:443", "https://est.example.org/x", true},
		{"est.example.org:443", "http://est.example.org/x", false},
		{"est.example.org:8443", "https://est.example.org:8443/x", true},
		{"est.example.org", "https://evil.org/?est.example.org", false},
		{"est.example.org", "https://est.example.org.evil.org/", false},
		{"*.azure-devices.net:443", "https://hub1.azure-devices.net/", true},
		{"*.azure-devices.net:443", "https://a.b.azure-devices.net/", true},
		{"*.azure-devices.net:443", "https://azure-devices.net/", false},
		{"*.azure-devices.net:443", "https://evilazure-devices.net/", false},
		{"127.0.0.1:8443", "https://127.0.0.1:8443/", true},
		{"127.0.0.1:8443", "https://localhost:8443/", false},
		{"[2001:db8::1]:443", "https://[2001:db8:0::1]/", true},
		{"2001:db8::1", "https://[2001:db8::1]:9/", true},
		{"2001:db8::1", "https://[2001:db8::2]:9/", false},
	}
	for _, tc := range tests {
		rules, err := parseEgress([]string{tc.rule})
		if err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		u, _ := url.Parse(tc.url)
		if ok, _ := egressAllowed(rules, u); ok != tc.allowed {
			t.Errorf("%s allows %s = %v, want %v", tc.rule, tc.url, ok, tc.allowed)
		}
	}
	for _, bad := range []string{"", "a b", "host:0", "host:99999", "*.", "x/y", "a:b:c", "*"} {
		if _, err := parseEgress([]string{bad}); err == nil {
			t.Errorf("egress %q accepted", bad)
		}
	}
}

// TestRefusedReloadAfterKeyRevoked: trusted keys named by path are part of
// the configuration even though the path does not change. An operator who
// revokes the vendor key by replacing its file has changed the trusted
// keys: the version signed by the revoked key must stop serving, as it does
// when trusted_keys itself is edited. It kept serving, because the
// configuration's strings were unchanged.
func TestRefusedReloadAfterKeyRevoked(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	f := newFixture(t, nil, nil)
	signFile(t, priv, f.path)
	keyPath := filepath.Join(f.dir, "vendor.pub")
	if err := os.WriteFile(keyPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg
	cfg.SHA256, cfg.Signature, cfg.TrustedKeys = "", f.path+".sig", []string{keyPath}
	ctx := context.Background()
	if err := f.h.Load(ctx, []ModuleConfig{cfg}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Run(ctx, "probe", steps(map[string]any{"op": "version"})); err != nil {
		t.Fatal(err)
	}
	// A swapped module file that fails verification leaves the version
	// serving while its key is still trusted...
	copyModule(t, wasmOf(t, "probe-v2"), f.dir, "probe.wasm")
	if err := f.h.Reload(ctx); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload of a tampered file: %v", err)
	}
	if _, err := f.h.Run(ctx, "probe", steps(map[string]any{"op": "version"})); err != nil {
		t.Fatalf("the verified version stopped serving: %v", err)
	}
	// ...but not once the key file holds another key.
	if err := os.WriteFile(keyPath, otherPub, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Reload(ctx); !errors.Is(err, ErrIntegrity) || strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload after the key was revoked: %v", err)
	}
	if _, err := f.h.Run(ctx, "probe", steps(map[string]any{"op": "version"})); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a version signed by a revoked key still runs jobs: %v", err)
	}
	if st, _ := f.h.Module("probe"); st.Loaded {
		t.Fatalf("status %+v", st)
	}
}

// TestReloadDuringLoad: a reload (POST /modules/reload) that arrives while
// a new configuration is being loaded (SIGHUP) re-verifies the new
// configuration's modules. It read the configuration before waiting for
// the load in progress, then loaded that stale one over the new: a module
// the operator had removed came back, and a changed path or pin reverted.
func TestReloadDuringLoad(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	other := f.cfg
	other.Name = "other"
	if err := f.h.Load(ctx, []ModuleConfig{f.cfg, other}); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	// The new configuration drops "other" and reads probe through a FIFO,
	// so that its load stays in progress until the test writes the file.
	fifo := filepath.Join(f.dir, "probe.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	next := f.cfg
	next.Path = fifo
	feed := func() error { // one read of the FIFO: blocks until a reader opens it
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer w.Close()
		_, err = w.Write(bin)
		return err
	}
	loaded := make(chan error, 1)
	go func() { loaded <- f.h.Load(ctx, []ModuleConfig{next}) }()
	for deadline := time.Now().Add(10 * time.Second); f.h.loadMu.TryLock(); time.Sleep(time.Millisecond) {
		f.h.loadMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the load did not start")
		}
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- f.h.Reload(ctx) }()
	time.Sleep(200 * time.Millisecond) // the reload is waiting for the load
	if err := feed(); err != nil {
		t.Fatal(err)
	}
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	fed := make(chan error, 1)
	go func() { fed <- feed() }() // the reload's read of the new path, if it makes one
	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reload did not end")
	}
	if names := len(f.h.Modules()); names != 1 {
		t.Errorf("after the reload, %d modules are configured, want 1: %+v", names, f.h.Modules())
	}
	if st, _ := f.h.Module("probe"); st.Path != fifo {
		t.Errorf("after the reload, probe's path is %s, want %s", st.Path, fifo)
	}
	select {
	case <-fed:
	default: // the stale reload never opened the FIFO: unblock the writer
		if r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			r.Close()
		}
	}
}
