package identityd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// TestDPSModuleSwap: a new build of the dps module, loaded by a reload,
// runs the next reprovision.
func TestDPSModuleSwap(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, _ := started(t, r)
	_, file, _, _ := runtime.Caller(0)
	v2 := filepath.Join(t.TempDir(), "dps-v2.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=v2", "-o", v2, "./wasm-modules/dps")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build v2: %v\n%s", err, out)
	}
	sum := sha256File(t, v2)
	hubPath := filepath.Join(buildModules(t), "hub.wasm")
	ctx := context.Background()
	if err := r.host.Load(ctx, []host.ModuleConfig{
		{Name: "dps", Path: v2, SHA256: sum, Egress: []string{"localhost"}, Limits: host.Limits{Timeout: 2 * time.Minute}},
		{Name: "hub", Path: hubPath, SHA256: sha256File(t, hubPath), Egress: []string{"localhost"}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reprovision(ctx); err != nil {
		t.Fatal(err)
	}
	st, ok := r.host.Module("dps")
	if !ok || st.LastJob == nil || st.LastJob.Digest != "sha256:"+sum || !st.LastJob.OK {
		t.Fatalf("dps status after the swap = %+v", st)
	}
}
