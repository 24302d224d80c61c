package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestIdentityDPSModuleSwap: a new build of the dps module, configured and
// reloaded with SIGHUP, runs the next reprovision (I3) through wardend.
func TestIdentityDPSModuleSwap(t *testing.T) {
	needRoot(t)
	r := newIdentityRig(t)
	d := startDaemon(t, r.extra())
	v1 := filepath.Join(identityModules(t), "dps.wasm")
	v2 := filepath.Join(newDir(t), "dps-v2.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=v2", "-o", v2, "../wasm-modules/dps")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build v2: %v\n%s", err, out)
	}
	sum1, sum2 := fileSHA256(t, v1), fileSHA256(t, v2)
	if sum1 == sum2 {
		t.Fatal("v2 has v1's digest")
	}
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	swapped := strings.NewReplacer(v1, v2, sum1, sum2).Replace(string(cfg))
	if err := os.WriteFile(d.cfgPath, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the dps module swapped", func() string {
		if dg := moduleStatus(t, d, "dps")["digest"]; dg != "sha256:"+sum2 {
			return fmt.Sprintf("digest %v", dg)
		}
		return ""
	})
	resp := do(t, request{Socket: d.socket("identityd"), Method: "POST", Target: "/identities/device/reprovision?api-version=2021-12-01", Body: `{"type":"aziot"}`})
	if resp.Status != 204 {
		t.Fatalf("I3 = %d %s", resp.Status, resp.Body)
	}
	last, _ := moduleStatus(t, d, "dps")["lastJob"].(map[string]any)
	if last == nil || last["digest"] != "sha256:"+sum2 || last["ok"] != true {
		t.Fatalf("the reprovision ran %v", last)
	}
}
