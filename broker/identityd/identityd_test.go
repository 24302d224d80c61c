package identityd

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
)

// moduleIDs lists the emulator's modules of the device.
func moduleIDs(r *rig, dev *identity.Device) []string {
	var out []string
	for _, m := range r.emu.Modules(dev.HubName, dev.DeviceID) {
		out = append(out, m.ModuleID)
	}
	return out
}

// moduleToken mints a module SAS token through the derived handle, as a
// host process does with keyd /sign (HMAC-SHA256 on the handle).
func moduleToken(t *testing.T, r *rig, s *Server, id *Identity) string {
	t.Helper()
	ctx := context.Background()
	ref, err := hsm.NewHandles(r.keys).Verify(ctx, id.Spec.Auth.KeyHandle)
	if err != nil || ref.Kind != hsm.KindDerived || ref.BaseRef.ID != MasterKeyID {
		t.Fatalf("handle: %+v %v", ref, err)
	}
	key, err := r.keys.DeriveKey(ctx, ref.BaseRef.ID, ref.Data)
	if err != nil {
		t.Fatal(err)
	}
	sr := identity.EncodeSR(id.Spec.HubName + "/devices/" + id.Spec.DeviceID + "/modules/" + id.Spec.ModuleID)
	se := time.Now().Add(time.Minute).Unix()
	return identity.Token(sr, hsm.DerivedHMACSHA256(key, identity.StringToSign(sr, se)), se, "")
}

func TestDPSSymmetricKeyProvisioning(t *testing.T) {
	r := newRig(t, emulator.Options{})
	group, err := r.emu.AddGroupEnrollment(emulator.GroupEnrollment{Name: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	individual, err := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "dev-individual"})
	if err != nil {
		t.Fatal(err)
	}
	groupFile := filepath.Join(r.keyFS, "group.key")
	gk, _ := base64.StdEncoding.DecodeString(group.PrimaryKey)
	os.WriteFile(groupFile, gk, 0o600)
	tests := []struct {
		name, regID, key string
		group            bool
	}{
		{"individual", "dev-individual", individual.PrimaryKey, false},
		{"group, device key derived in the key store", "dev-group-1", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.dir = t.TempDir()
			pre := map[string]string{}
			cfg := r.dpsConfig(tc.regID, tc.key, "hostproc1", "hostproc2")
			if tc.group {
				pre[GroupKeyID] = "file://" + groupFile
				cfg.PreloadedKeys = pre
			}
			r.openKeys(t, pre)
			s, err := r.server(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			dev := s.Device()
			if dev == nil || dev.DeviceID != tc.regID || !strings.HasPrefix(dev.HubName, "localhost:") {
				t.Fatalf("device = %+v", dev)
			}
			id, err := s.DeviceIdentity(context.Background())
			if err != nil || id.Type != "aziot" || id.Spec.Auth.Type != "sas" || id.Spec.Auth.KeyHandle == "" || id.Spec.ModuleID != "" {
				t.Fatalf("device identity = %+v, %v", id, err)
			}
			if got := moduleIDs(r, dev); !slices.Equal(got, []string{"hostproc1", "hostproc2"}) {
				t.Fatalf("hub modules = %v", got)
			}
			for _, m := range []string{"hostproc1", "hostproc2"} {
				mid, err := s.ModuleIdentity(context.Background(), m)
				if err != nil {
					t.Fatal(err)
				}
				// The hub holds keys derived per §6.5.
				want, _ := r.keys.DeriveKey(context.Background(), MasterKeyID, identity.ModuleKeyData(m, mid.Spec.GenID, true))
				for _, hm := range r.emu.Modules(dev.HubName, dev.DeviceID) {
					if hm.ModuleID == m && hm.Authentication.SymmetricKey.PrimaryKey != b64(want) {
						t.Errorf("%s: hub key is not HMAC(master, %q)", m, identity.ModuleKeyData(m, mid.Spec.GenID, true))
					}
				}
				if err := r.emu.VerifyModuleSAS(dev.HubName, dev.DeviceID, m, moduleToken(t, r, s, mid)); err != nil {
					t.Errorf("%s: the hub refused the module's token: %v", m, err)
				}
			}
		})
	}
}
