package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// copyDefaultPolicy copies the shipped default policy into dir, as an
// operator starts a policy directory.
func copyDefaultPolicy(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob("../policy/default/*.rego")
	if err != nil || len(files) == 0 {
		t.Fatalf("default policy files: %v %v", files, err)
	}
	os.MkdirAll(dir, 0o755)
	for _, f := range files {
		if err := copyFile(f, filepath.Join(dir, filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// eventually polls check until it returns "" or the deadline passes.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPolicyReload: editing the policy directory changes decisions without a
// restart; a policy that does not compile is refused and the old one decides.
func TestPolicyReload(t *testing.T) {
	dir := newDir(t)
	pdir := filepath.Join(dir, "policy")
	copyDefaultPolicy(t, pdir)
	d := startDaemon(t, fmt.Sprintf("\n[warden.policy]\ndir = %q\ndecision_log = %q\n", pdir, filepath.Join(dir, "decisions.log")))
	health := request{Socket: d.socket("broker"), Method: "GET", Target: "/health?api-version=2026-12-01"}
	if r := do(t, health); r.Status != 200 {
		t.Fatalf("health: %d %s", r.Status, r.Body)
	}

	extra := filepath.Join(pdir, "zz_site.rego")
	deny := "package warden.authz\n\ndeny contains \"health checks are closed for maintenance\" if input.action.operation == \"health\"\n"
	if err := os.WriteFile(extra, []byte(deny), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new deny rule takes effect", func() string {
		if r := do(t, health); r.Status != 401 || !strings.Contains(r.message(), "closed for maintenance") {
			return fmt.Sprintf("health: %d %s", r.Status, r.Body)
		}
		return ""
	})

	if err := os.WriteFile(extra, []byte("package warden.authz\n\ndeny contains x if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the broken policy is refused with a log line", func() string {
		if !strings.Contains(d.stderr.String(), "zz_site.rego") {
			return "no log line naming the broken file"
		}
		return ""
	})
	if r := do(t, health); r.Status != 401 {
		t.Fatalf("after a broken policy, the previous one must still decide: %d %s", r.Status, r.Body)
	}

	os.Remove(extra)
	eventually(t, "removing the rule restores access", func() string {
		if r := do(t, health); r.Status != 200 {
			return fmt.Sprintf("health: %d %s", r.Status, r.Body)
		}
		return ""
	})
	log, err := os.ReadFile(filepath.Join(dir, "decisions.log"))
	if err != nil || !strings.Contains(string(log), `"health"`) {
		t.Errorf("decision log: %v %q", err, log)
	}
}

// TestSIGHUPReloadsPrincipals: a principal added to the config takes effect
// on SIGHUP, without a restart.
func TestSIGHUPReloadsPrincipals(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, "")
	mintLoad := d.post("/tokens", map[string]any{"capabilities": caps("key:b-1", "load")}, nil)
	if r := doAs(t, uidB, mintLoad); r.Status != 401 {
		t.Fatalf("before reload: %d %s, want 401", r.Status, r.Body)
	}
	f, err := os.OpenFile(d.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[principal]]\nuid = %d\nkeys = [\"b-*\"]\n", uidB)
	f.Close()
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "SIGHUP reloads principals", func() string {
		if r := doAs(t, uidB, mintLoad); r.Status != 200 {
			return fmt.Sprintf("%d %s", r.Status, r.Body)
		}
		return ""
	})
}
