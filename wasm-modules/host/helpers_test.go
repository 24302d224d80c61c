package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/warden-iot/warden/internal/syncbuf"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// Test modules are built once per test binary from testdata/ with the go
// toolchain (the build cache makes later runs fast); nothing built is
// committed.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// wasmOf builds (once) and returns the path of a test module: "probe",
// "probe-v2" (the same source, another version string and digest), and
// "reactor" (probe built with -buildmode=c-shared).
func wasmOf(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "warden-host-modules-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct {
			out  string
			args []string
		}{
			{"probe", nil},
			{"probe-v2", []string{"-ldflags", "-X main.version=v2"}},
			{"reactor", []string{"-buildmode=c-shared"}},
		} {
			args := append([]string{"build", "-o", filepath.Join(buildDir, b.out+".wasm")}, b.args...)
			cmd := exec.Command("go", append(args, "./testdata/probe")...)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", b.out, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, name+".wasm")
}

// sharedCache is a compilation cache directory shared by the tests that do
// not test the cache, so that each module is compiled once per run.
func sharedCache(t testing.TB) string {
	wasmOf(t, "probe")
	return filepath.Join(buildDir, "cache")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// copyModule copies a built module into dir as name and returns its path
// and hex digest.
func copyModule(t testing.TB, src, dir, name string) (string, string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// decider is a test policy: it allows everything but the denied
// "op resource" pairs, and records every input.
type decider struct {
	mu     sync.Mutex
	deny   map[string]bool
	inputs []policy.Input
}

func (d *decider) Decide(_ context.Context, in *policy.Input) (policy.Decision, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inputs = append(d.inputs, *in)
	if d.deny[in.Action.Operation+" "+in.Action.Resource] {
		return policy.Decision{Reasons: []string{"test policy denies " + in.Action.Operation}}, nil
	}
	return policy.Decision{Allow: true, Reasons: []string{"test policy allows"}}, nil
}

func (d *decider) ops() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, in := range d.inputs {
		out = append(out, in.Action.Operation+" "+in.Action.Resource)
	}
	return out
}

// fixture is a host with the probe module loaded as "probe".
type fixture struct {
	h    *Host
	dir  string
	path string
	cfg  ModuleConfig
	dec  *decider
	logs *syncbuf.Buffer
}

func newFixture(t testing.TB, mod func(*ModuleConfig), opt func(*Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	path, sum := copyModule(t, wasmOf(t, "probe"), dir, "probe.wasm")
	f := &fixture{dir: dir, path: path, dec: &decider{deny: map[string]bool{}}, logs: &syncbuf.Buffer{}}
	opts := Options{
		CacheDir: sharedCache(t),
		Decider:  f.dec,
		Logger:   slog.New(slog.NewTextHandler(io.MultiWriter(f.logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Certs:    memCerts{},
	}
	if opt != nil {
		opt(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	f.h = h
	f.cfg = ModuleConfig{Name: "probe", Path: path, SHA256: sum, Limits: Limits{MemoryMB: 32}}
	if mod != nil {
		mod(&f.cfg)
	}
	if err := h.Load(context.Background(), []ModuleConfig{f.cfg}); err != nil {
		t.Fatal(err)
	}
	return f
}

// steps builds a probe job.
func steps(ss ...map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"steps": ss})
	return b
}

func call(op string, req any) map[string]any {
	return map[string]any{"op": op, "req": req}
}

// probeResult is the probe's output.
type probeResult struct {
	Version string `json:"version"`
	Steps   []struct {
		Op    string          `json:"op"`
		Resp  json.RawMessage `json:"resp"`
		Error *guest.Error    `json:"error"`
	} `json:"steps"`
}

func parseProbe(t testing.TB, res *Result) probeResult {
	t.Helper()
	var p probeResult
	if err := json.Unmarshal(res.Output, &p); err != nil {
		t.Fatalf("probe output %s: %v", res.Output, err)
	}
	return p
}

// memCerts is an in-memory CertStore.
type memCerts map[string][]byte

func (m memCerts) Get(_ context.Context, id string) ([]byte, error) {
	b, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("cert %q: %w", id, ErrNotFound)
	}
	return b, nil
}

func (m memCerts) Put(_ context.Context, id string, pem []byte) error {
	if strings.Contains(id, "readonly") {
		return fmt.Errorf("cert %q is read-only", id)
	}
	m[id] = pem
	return nil
}
