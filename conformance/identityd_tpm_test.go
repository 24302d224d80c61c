package conformance

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// TestIdentityDPSTPM: wardend provisions with TPM attestation on swtpm —
// the dps module answers DPS's challenge through the broker's TPM — and
// the hub module creates the host process's module with TPM-signed tokens.
func TestIdentityDPSTPM(t *testing.T) {
	needRoot(t)
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	r := newIdentityRig(t)
	if err := r.emu.AddTPMEnrollment(emulator.TPMEnrollment{RegistrationID: "conf-tpm"}); err != nil {
		t.Fatal(err)
	}
	extra := r.modulesAndTrust() + `
[provisioning]
source = "dps"
global_endpoint = "` + r.emu.URL() + `"
id_scope = "` + r.emu.IDScope() + `"

[provisioning.attestation]
method = "tpm"
registration_id = "conf-tpm"
` + tpmConfig(sw, "")
	d := startDaemon(t, extra)
	resp := do(t, request{Socket: d.socket("identityd"), Method: "POST", Target: "/identities/device?api-version=2020-09-01", Body: `{"type":"aziot"}`})
	var dev idJSON
	if resp.Status != 200 || json.Unmarshal(resp.Body, &dev) != nil || dev.Spec.DeviceID != "conf-tpm" ||
		dev.Spec.Auth == nil || dev.Spec.Auth.Type != "tpm" || strings.Contains(string(resp.Body), "keyHandle") {
		t.Fatalf("I2 = %d %s", resp.Status, resp.Body)
	}
	if got := d.hubModules(r.emu, dev.Spec.HubName, "conf-tpm"); !slices.Equal(got, []string{"agent-b"}) {
		t.Fatalf("hub modules = %v", got)
	}
	resp = do(t, request{Socket: d.socket("identityd"), Method: "GET", Target: "/identities/provisioning?api-version=2021-12-01"})
	if !strings.Contains(string(resp.Body), `"auth":"tpm"`) {
		t.Fatalf("I4 = %s", resp.Body)
	}
}
