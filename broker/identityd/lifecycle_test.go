package identityd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

// started provisions dev-life with modules through an individual enrollment.
func started(t *testing.T, r *rig, modules ...string) (*Server, string) {
	t.Helper()
	en, err := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "dev-life"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.server(t, r.dpsConfig("dev-life", en.PrimaryKey, modules...))
	if err != nil {
		t.Fatal(err)
	}
	return s, en.PrimaryKey
}

func TestReconcileOnReload(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, key := started(t, r, "keep", "drop")
	ctx := context.Background()
	dev := s.Device()
	// A module the broker did not create (e.g. an IoT Edge module).
	s.mu.Lock()
	_, err := s.hub(ctx, dev, hubjob.OpCreate, "edgeAgent")
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	keep, err := s.ModuleIdentity(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	// "drop" leaves the configuration, "added" joins it.
	if err := s.Reload(ctx, r.dpsConfig("dev-life", key, "keep", "added")); err != nil {
		t.Fatal(err)
	}
	if got := moduleIDs(r, dev); !slices.Equal(got, []string{"added", "edgeAgent", "keep"}) {
		t.Fatalf("hub modules after reload = %v", got)
	}
	again, err := s.ModuleIdentity(ctx, "keep")
	if err != nil || again.Spec.GenID != keep.Spec.GenID {
		t.Fatalf("a kept module changed generation: %v → %+v (%v)", keep.Spec.GenID, again.Spec, err)
	}
	if _, err := s.ModuleIdentity(ctx, "drop"); err == nil {
		t.Fatal("the removed module is still served")
	}
	// A configured module that exists on the hub but was not created here is
	// recreated (new generation).
	if err := s.Reload(ctx, r.dpsConfig("dev-life", key, "keep", "added", "edgeAgent")); err != nil {
		t.Fatal(err)
	}
	if got := moduleIDs(r, dev); !slices.Equal(got, []string{"added", "edgeAgent", "keep"}) {
		t.Fatalf("hub modules = %v", got)
	}
}

func TestOfflineStartFromBackups(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, key := started(t, r, "hostproc1")
	ctx := context.Background()
	online, err := s.ModuleIdentity(ctx, "hostproc1")
	if err != nil {
		t.Fatal(err)
	}
	r.emu.Close()
	// Restart with the cloud gone: device_info and the module backup serve.
	s2, err := r.server(t, r.dpsConfig("dev-life", key, "hostproc1"))
	if err != nil {
		t.Fatalf("offline start: %v", err)
	}
	off, err := s2.ModuleIdentity(ctx, "hostproc1")
	if err != nil || off.Spec.GenID != online.Spec.GenID || off.Spec.Auth.KeyHandle == "" {
		t.Fatalf("offline module identity = %+v, %v", off, err)
	}
	if _, err := s2.DeviceIdentity(ctx); err != nil {
		t.Fatal(err)
	}
	// Without a backup, the start fails clearly.
	r.dir = t.TempDir()
	r.openKeys(t, nil)
	_, err = r.server(t, r.dpsConfig("dev-life", key, "hostproc1"))
	if err == nil || !IsNetwork(err) || !strings.Contains(err.Error(), "DPS client error") {
		t.Fatalf("start without backup and DPS = %v", err)
	}
}

func TestReprovisionAndErrors(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, key := started(t, r, "m1")
	ctx := context.Background()
	before := registers(r)
	if err := s.Reprovision(ctx); err != nil {
		t.Fatal(err)
	}
	if n := registers(r); n != before+1 {
		t.Fatalf("reprovision registered %d times", n-before)
	}
	if _, err := s.ModuleIdentity(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		fault emulator.Fault
		key   string
		check func(error) bool
	}{
		{"wrong key is an auth error", emulator.Fault{}, emulator.NewKey(), func(err error) bool {
			var ce *CloudError
			return errors.As(err, &ce) && ce.Client == "DPS" && !ce.Network
		}},
		{"a few 429s are backed off", emulator.Fault{Op: emulator.OpRegister, Status: 429, Count: 2}, key, func(err error) bool { return err == nil }},
		{"a 429 storm gives up after the schedule", emulator.Fault{Op: emulator.OpRegister, Status: 429}, key, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "429")
		}},
		{"a 500 is a network error", emulator.Fault{Op: emulator.OpRegister, Status: 500}, key, IsNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.emu.ClearFaults()
			if tc.fault.Status != 0 {
				r.emu.InjectFault(tc.fault)
			}
			defer r.emu.ClearFaults()
			s.mu.Lock()
			s.cfg = r.dpsConfig("dev-life", tc.key, "m1")
			s.mu.Unlock()
			events := len(r.emu.Events())
			err := s.Reprovision(ctx)
			if !tc.check(err) {
				t.Fatalf("reprovision = %v", err)
			}
			if tc.fault.Status == 429 && tc.fault.Count == 0 {
				if n := len(r.emu.Events()) - events; n != 5 {
					t.Fatalf("%d calls during a 429 storm, want 5", n)
				}
			}
		})
	}
}

func registers(r *rig) int {
	n := 0
	for _, e := range r.emu.Events() {
		if e.Op == emulator.OpRegister {
			n++
		}
	}
	return n
}

// TestCustomAllocationPayload: the configured payload file goes to DPS,
// and custom allocation can place the device.
func TestCustomAllocationPayload(t *testing.T) {
	var got []byte
	r := newRig(t, emulator.Options{Allocate: func(req emulator.AllocationRequest) (emulator.Allocation, error) {
		got = req.Payload
		a := req.Default
		a.DeviceID = "allocated-" + req.RegistrationID
		a.Payload = []byte(`{"welcome":true}`)
		return a, nil
	}})
	en, err := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "dev-pl"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.dir, "payload.json")
	os.WriteFile(path, []byte(`{"modelId":"dtmi:warden:sample;1"}`), 0o600)
	cfg := r.dpsConfig("dev-pl", en.PrimaryKey)
	cfg.Provisioning.Payload = &config.Payload{URI: "file://" + path}
	s, err := r.server(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"modelId":"dtmi:warden:sample;1"}` {
		t.Fatalf("DPS got payload %s", got)
	}
	if d := s.Device(); d.DeviceID != "allocated-dev-pl" {
		t.Fatalf("device = %+v", d)
	}
	if string(s.payload) != `{"welcome":true}` {
		t.Fatalf("returned payload = %s", s.payload)
	}
}

// TestModuleBackups: a hub 404 deletes the backup; with
// prefer_module_identity_cache the backup answers first.
func TestModuleBackups(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, _ := started(t, r, "cached", "gone")
	ctx := context.Background()
	dev := s.Device()
	s.mu.Lock()
	_, err := s.hub(ctx, dev, hubjob.OpDelete, "gone")
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var ce *CloudError
	if _, err := s.ModuleIdentity(ctx, "gone"); !errors.As(err, &ce) || !ce.NotFound {
		t.Fatalf("a module deleted on the hub: %v", err)
	}
	if _, err := s.state.GetModule(dev, "gone"); err == nil {
		t.Fatal("a hub 404 left the backup")
	}
	s.mu.Lock()
	s.cfg.PreferModuleIdentityCache = true
	s.mu.Unlock()
	r.emu.InjectFault(emulator.Fault{Op: emulator.OpModuleGet, Status: 403})
	if id, err := s.ModuleIdentity(ctx, "cached"); err != nil || id.Spec.GenID == "" {
		t.Fatalf("cache first: %+v, %v", id, err)
	}
}
