package conformance

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The host's test module (wasm-modules/host/testdata/probe), built once per
// run as v1 and v2 (another version string, another digest).
var (
	probeOnce sync.Once
	probeDir  string
	probeErr  error
)

func probeModule(t *testing.T, version string) string {
	t.Helper()
	probeOnce.Do(func() {
		probeDir, probeErr = os.MkdirTemp("", "warden-conf-modules-")
		if probeErr != nil {
			return
		}
		for _, v := range []string{"v1", "v2"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+v,
				"-o", filepath.Join(probeDir, "probe-"+v+".wasm"), "../wasm-modules/host/testdata/probe")
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				probeErr = fmt.Errorf("build probe %s: %v\n%s", v, err, out)
				return
			}
		}
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return filepath.Join(probeDir, "probe-"+version+".wasm")
}

// moduleRig is a wardend with the probe module, signed, and a policy that
// restricts the probe's host calls (data.json), with a decision log.
type moduleRig struct {
	d       *daemon
	dir     string
	path    string
	priv    ed25519.PrivateKey
	decLog  string
	version func() string
}

// install copies the probe version v to the module path and signs it.
func (r *moduleRig) install(t *testing.T, v string) {
	t.Helper()
	b, err := os.ReadFile(probeModule(t, v))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(r.path+".tmp", b, 0o644)
	os.Rename(r.path+".tmp", r.path)
	sig := ed25519.Sign(r.priv, b)
	os.WriteFile(r.path+".sig", []byte(base64.StdEncoding.EncodeToString(sig)), 0o644)
}

func (r *moduleRig) run(t *testing.T, job string) map[string]any {
	t.Helper()
	resp := do(t, request{Socket: r.d.socket("broker"), Method: "POST", Target: "/modules/probe/run?api-version=2026-12-01",
		Header: map[string]string{"Content-Type": "application/json"}, Body: job})
	if resp.Status != 200 {
		t.Fatalf("run: %d %s", resp.Status, resp.Body)
	}
	var out map[string]any
	json.Unmarshal(resp.Body, &out)
	return out
}

func (r *moduleRig) runVersion(t *testing.T) string {
	t.Helper()
	out := r.run(t, `{"steps":[{"op":"version"}]}`)
	if out["ok"] != true {
		t.Fatalf("version job failed: %v", out)
	}
	return out["output"].(map[string]any)["version"].(string)
}

func newModuleRig(t *testing.T) *moduleRig {
	t.Helper()
	needRoot(t) // the module API of broker.sock is for uid 0
	dir := newDir(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	r := &moduleRig{dir: dir, path: filepath.Join(dir, "probe.wasm"), priv: priv, decLog: filepath.Join(dir, "decisions.log")}
	r.install(t, "v1")
	pdir := filepath.Join(dir, "policy")
	copyDefaultPolicy(t, pdir)
	data := `{"warden": {"modules": {"probe": {"host_calls": {"log": ["*"], "certs.get": ["cert:probe-*"]}}}}}`
	os.WriteFile(filepath.Join(pdir, "data.json"), []byte(data), 0o644)
	r.d = startDaemon(t, fmt.Sprintf(`
[warden.policy]
dir = %q
decision_log = %q

[warden.modules.probe]
path = %q
signature = %q
trusted_keys = [%q]
timeout = "3s"
memory_limit_mb = 32
egress = ["127.0.0.1:9"]
`, pdir, r.decLog, r.path, r.path+".sig", base64.StdEncoding.EncodeToString(pub)))
	return r
}

// TestModulesSandbox: hostile jobs through broker.sock fail with a clear
// kind and wardend keeps serving; a host call outside the allowlist and one
// the policy denies are refused, the latter in the decision log.
func TestModulesSandbox(t *testing.T) {
	r := newModuleRig(t)
	if v := r.runVersion(t); v != "v1" {
		t.Fatalf("version %s", v)
	}
	for _, tc := range []struct{ job, kind string }{
		{`{"steps":[{"op":"loop"}]}`, "deadline"},
		{`{"steps":[{"op":"alloc"}]}`, "memory"},
		{`{"steps":[{"op":"trap"}]}`, "trap"},
		{`{"steps":[{"op":"gopanic"}]}`, "exit"},
	} {
		out := r.run(t, tc.job)
		if out["ok"] != false || out["kind"] != tc.kind {
			t.Errorf("%s: %v", tc.job, out)
		}
		if v := r.runVersion(t); v != "v1" {
			t.Fatalf("after %s: version %s", tc.kind, v)
		}
	}
	out := r.run(t, `{"steps":[
		{"op":"http.do","req":{"method":"GET","url":"https://example.org/"}},
		{"op":"certs.get","req":{"cert_id":"device-id"}},
		{"op":"log","req":{"msg":"probe says hi"}}]}`)
	steps := out["output"].(map[string]any)["steps"].([]any)
	errOf := func(i int) string {
		e, _ := steps[i].(map[string]any)["error"].(map[string]any)
		return fmt.Sprint(e["code"], ": ", e["message"])
	}
	if !strings.Contains(errOf(0), "denied: ") || !strings.Contains(errOf(0), "egress allowlist") {
		t.Errorf("http.do outside the allowlist: %s", errOf(0))
	}
	if !strings.Contains(errOf(1), "denied: ") || !strings.Contains(errOf(1), "not in data.warden.modules.probe.host_calls") {
		t.Errorf("certs.get denied by policy: %s", errOf(1))
	}
	eventually(t, "the denial in the decision log", func() string {
		b, _ := os.ReadFile(r.decLog)
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			var e struct {
				Module *struct{ Name, Digest string } `json:"module"`
				Action struct{ Service, Operation, Resource string }
				Result string
			}
			json.Unmarshal(sc.Bytes(), &e)
			if e.Module != nil && e.Module.Name == "probe" && strings.HasPrefix(e.Module.Digest, "sha256:") &&
				e.Action.Operation == "certs.get" && e.Action.Resource == "cert:device-id" && e.Result == "deny" {
				return ""
			}
		}
		return "no deny entry for certs.get by module probe"
	})
	if !strings.Contains(r.d.stderr.String(), "probe says hi") {
		t.Error("the module's log line is not in wardend's log")
	}
	if do(t, request{Socket: r.d.socket("broker"), Method: "GET", Target: "/health?api-version=2026-12-01"}).Status != 200 {
		t.Fatal("wardend is not serving")
	}
}

// TestModulesSwap: replacing the module file takes effect on the next job
// after `wardenctl modules reload` or SIGHUP, without a restart; a file
// whose signature does not verify is refused and the running version stays.
func TestModulesSwap(t *testing.T) {
	r := newModuleRig(t)
	sock := r.d.socket("broker")
	list := func() map[string]any {
		t.Helper()
		stdout, stderr, code := wardenctl(t, "modules", "list", "--json", "--socket", sock)
		if code != 0 {
			t.Fatalf("modules list: exit %d: %s", code, stderr)
		}
		var resp struct{ Modules []map[string]any }
		json.Unmarshal([]byte(stdout), &resp)
		return resp.Modules[0]
	}
	if v := r.runVersion(t); v != "v1" {
		t.Fatalf("version %s", v)
	}
	m1 := list()
	if m1["signature"] != "verified" || m1["lastJob"].(map[string]any)["ok"] != true {
		t.Fatalf("list: %v", m1)
	}
	pid := r.d.cmd.Process.Pid

	r.install(t, "v2")
	if v := r.runVersion(t); v != "v1" {
		t.Fatalf("before the reload the old module must run: %s", v)
	}
	if out, stderr, code := wardenctl(t, "modules", "reload", "--socket", sock); code != 0 || !strings.Contains(out, "probe") {
		t.Fatalf("modules reload: exit %d: %s %s", code, out, stderr)
	}
	if v := r.runVersion(t); v != "v2" {
		t.Fatalf("after the reload: version %s", v)
	}
	if m2 := list(); m2["digest"] == m1["digest"] {
		t.Fatalf("digest unchanged: %v", m2)
	}

	r.install(t, "v1")
	r.d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "SIGHUP swaps the module", func() string {
		if v := r.runVersion(t); v != "v1" {
			return "version " + v
		}
		return ""
	})

	// A tampered file (the signature is for another file) is refused.
	os.WriteFile(r.path, append(mustRead(t, probeModule(t, "v2")), 0), 0o644)
	stdout, stderr, code := wardenctl(t, "modules", "reload", "--socket", sock)
	if code != 1 || !strings.Contains(stderr, "not valid under any of the 1 trusted keys") {
		t.Fatalf("reload of a tampered module: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if v := r.runVersion(t); v != "v1" {
		t.Fatalf("after a refused reload: version %s", v)
	}
	out, _, code := wardenctl(t, "modules", "run", "probe", "--job", `{"steps":[{"op":"fail"}]}`, "--socket", sock)
	if code != 1 || !strings.Contains(out, `"code": "probe_failed"`) {
		t.Fatalf("modules run of a failing job: exit %d: %s", code, out)
	}
	if r.d.cmd.Process.Pid != pid {
		t.Fatal("wardend restarted")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
