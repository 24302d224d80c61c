package conformance

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/warden-iot/warden/conformance/emulator"
)

// TestIdentityManualConnectionString: manual provisioning from a
// connection string through wardend — no DPS call, the device identity
// with aziot's shape, the host process's module created on the hub.
func TestIdentityManualConnectionString(t *testing.T) {
	needRoot(t)
	r := newIdentityRig(t)
	hd, err := r.emu.AddHubDevice(emulator.HubDevice{DeviceID: "manual-dev"})
	if err != nil {
		t.Fatal(err)
	}
	// The rig's modules and trust, with manual provisioning instead of DPS.
	extra := r.modulesAndTrust() + `
[provisioning]
source = "manual"
connection_string = "HostName=` + hd.IoTHub + `;DeviceId=manual-dev;SharedAccessKey=` + hd.PrimaryKey + `"
`
	d := startDaemon(t, extra)
	idd := d.socket("identityd")
	resp := do(t, request{Socket: idd, Method: "POST", Target: "/identities/device?api-version=2020-09-01", Body: `{"type":"aziot"}`})
	var dev idJSON
	if resp.Status != 200 || json.Unmarshal(resp.Body, &dev) != nil || dev.Spec.DeviceID != "manual-dev" || dev.Spec.HubName != hd.IoTHub ||
		dev.Spec.Auth == nil || dev.Spec.Auth.Type != "sas" {
		t.Fatalf("I2 = %d %s", resp.Status, resp.Body)
	}
	resp = do(t, request{Socket: idd, Method: "GET", Target: "/identities/provisioning?api-version=2021-12-01"})
	if resp.Status != 200 || string(resp.Body) != `{"source":"manual","auth":"sas"}` {
		t.Fatalf("I4 = %d %s", resp.Status, resp.Body)
	}
	if got := d.hubModules(r.emu, hd.IoTHub, "manual-dev"); !slices.Equal(got, []string{"agent-b"}) {
		t.Fatalf("hub modules = %v", got)
	}
	for _, e := range r.emu.Events() {
		if e.Op == emulator.OpRegister {
			t.Fatal("manual provisioning called DPS")
		}
	}
}
