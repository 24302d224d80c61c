package policy

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// okPolicy allows uid 1000 keyd load of key:x and nothing else.
const okPolicy = `package warden.authz

decision := {"allow": allow, "reasons": ["test policy"]}

default allow := false

allow if {
	input.caller.uid == 1000
	input.action.resource == "key:x"
}
`

// writePolicy writes files into dir (atomically: temp file and rename, as
// deployment tools do) and returns dir.
func writePolicy(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	for name, src := range files {
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func allowed(t testing.TB, e *Engine, x *Input) bool {
	t.Helper()
	d, err := e.Decide(context.Background(), x)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d.Allow
}

func TestReloadAndWatch(t *testing.T) {
	dir := writePolicy(t, t.TempDir(), map[string]string{"authz.rego": okPolicy})
	e := newTestEngine(t, Options{Dir: dir})
	req := in(1000, "keyd", "load", "key:x")
	if !allowed(t, e, req) {
		t.Fatal("initial policy does not allow")
	}
	rev0 := e.Revision()

	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- e.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-watchDone; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	// A change that denies: Watch must pick it up without a restart.
	writePolicy(t, dir, map[string]string{"authz.rego": strings.Replace(okPolicy, "1000", "1001", 1)})
	waitFor(t, func() bool { return !allowed(t, e, req) })
	if !allowed(t, e, in(1001, "keyd", "load", "key:x")) {
		t.Fatal("new policy does not allow uid 1001")
	}
	rev1 := e.Revision()
	if rev1 == rev0 {
		t.Fatal("revision did not change")
	}

	// A broken policy is rejected: the old one keeps deciding.
	writePolicy(t, dir, map[string]string{"broken.rego": "package warden.authz\n\nallow if {"})
	if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "broken.rego") {
		t.Fatalf("Reload of a broken policy: %v", err)
	}
	if e.Revision() != rev1 || !allowed(t, e, in(1001, "keyd", "load", "key:x")) {
		t.Fatal("the old policy is no longer in force")
	}

	// Fixing it is picked up again by Watch.
	if err := os.Remove(filepath.Join(dir, "broken.rego")); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, dir, map[string]string{"authz.rego": okPolicy})
	waitFor(t, func() bool { return allowed(t, e, req) })
}

func TestReloadUnchangedKeepsState(t *testing.T) {
	dir := writePolicy(t, t.TempDir(), map[string]string{"authz.rego": okPolicy})
	e := newTestEngine(t, Options{Dir: dir})
	st := e.state.Load()
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.state.Load() != st {
		t.Fatal("an unchanged directory was recompiled")
	}
}

func TestReloadEmptiedDirKeepsPolicy(t *testing.T) {
	dir := writePolicy(t, t.TempDir(), map[string]string{"authz.rego": okPolicy})
	e := newTestEngine(t, Options{Dir: dir})
	if err := os.Remove(filepath.Join(dir, "authz.rego")); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Reload of an empty dir: %v", err)
	}
	if !allowed(t, e, in(1000, "keyd", "load", "key:x")) {
		t.Fatal("the old policy is no longer in force")
	}
}

func TestWatchWithoutDir(t *testing.T) {
	e := newTestEngine(t, Options{})
	if err := e.Watch(context.Background()); err == nil {
		t.Fatal("Watch without a dir succeeded")
	}
}

// The default policy copied into a directory (as operators start) decides
// as the embedded one, with the same revision.
func TestDefaultPolicyCopiedToDir(t *testing.T) {
	dir := t.TempDir()
	err := fs.WalkDir(DefaultPolicy(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(DefaultPolicy(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	fromDir := newTestEngine(t, Options{Dir: dir, Principals: testPrincipals})
	embedded := newTestEngine(t, Options{Principals: testPrincipals})
	if fromDir.Revision() != embedded.Revision() {
		t.Fatalf("revisions differ: %s vs %s", fromDir.Revision(), embedded.Revision())
	}
	if !allowed(t, fromDir, in(1000, "keyd", "load", "key:device-id")) || allowed(t, fromDir, in(1000, "keyd", "load", "key:other")) {
		t.Fatal("the copied default policy decides differently")
	}
}

// Decisions running while the state is swapped see the old or the new
// state, never a mix, and never fail (run with -race).
func TestConcurrentDecideAndSwap(t *testing.T) {
	e := newTestEngine(t, Options{Principals: testPrincipals})
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := e.Decide(ctx, in(1000, "keyd", "load", "key:device-id"))
				if err != nil {
					t.Error(err)
					return
				}
				if !d.Allow && !strings.Contains(strings.Join(d.Reasons, ";"), "no principal whose keys match") {
					t.Errorf("unexpected decision %+v", d)
					return
				}
			}
		}()
	}
	for i := range 20 {
		ps := testPrincipals
		if i%2 == 1 {
			ps = nil
		}
		if err := e.SetPrincipals(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
