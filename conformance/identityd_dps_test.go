package conformance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/client/identityd"
	"github.com/warden-iot/warden/client/keyd"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/identity"
)

var (
	idModulesOnce sync.Once
	idModulesDir  string
	idModulesErr  error
)

// identityModules builds the dps and hub modules once.
func identityModules(t *testing.T) string {
	t.Helper()
	idModulesOnce.Do(func() {
		idModulesDir, idModulesErr = os.MkdirTemp("", "warden-conf-idmodules-")
		if idModulesErr != nil {
			return
		}
		os.Chmod(idModulesDir, 0o755)
		for _, m := range []string{"dps", "hub"} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(idModulesDir, m+".wasm"), "../wasm-modules/"+m)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				idModulesErr = fmt.Errorf("build %s: %v\n%s", m, err, out)
				return
			}
		}
	})
	if idModulesErr != nil {
		t.Fatal(idModulesErr)
	}
	return idModulesDir
}

// identityRig is an emulator with a group enrollment and the config extra
// that provisions wardend through it (group key derived in the key store).
type identityRig struct {
	emu   *emulator.Emulator
	extra func(modules ...string) string
	// modulesAndTrust is the [warden.modules.*] and cloud-trust part alone.
	modulesAndTrust func() string
}

func newIdentityRig(t *testing.T) *identityRig {
	t.Helper()
	mods := identityModules(t)
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	g, err := emu.AddGroupEnrollment(emulator.GroupEnrollment{Name: "conformance"})
	if err != nil {
		t.Fatal(err)
	}
	dir := newDir(t)
	gk, _ := base64.StdEncoding.DecodeString(g.PrimaryKey)
	keyPath, caPath := filepath.Join(dir, "group.key"), filepath.Join(dir, "emulator-ca.pem")
	os.WriteFile(keyPath, gk, 0o600)
	os.WriteFile(caPath, emu.CACertPEM(), 0o644)
	moduleTOML := ""
	for _, m := range []string{"dps", "hub"} {
		p := filepath.Join(mods, m+".wasm")
		moduleTOML += fmt.Sprintf("[warden.modules.%s]\npath = %q\nsha256 = %q\negress = [\"localhost\"]\n\n", m, p, fileSHA256(t, p))
	}
	trustTOML := fmt.Sprintf("[preloaded_certs]\ncloud-trust = \"file://%s\"\n\n", caPath)
	return &identityRig{emu: emu, modulesAndTrust: func() string { return moduleTOML + trustTOML }, extra: func(principals ...string) string {
		s := fmt.Sprintf(`
[provisioning]
source = "dps"
global_endpoint = %q
id_scope = %q

[provisioning.attestation]
method = "symmetric_key"
registration_id = "conf-dev-1"
symmetric_key = { uri = "file://%s" }

[preloaded_keys]
dps-group-key = "file://%s"

[preloaded_certs]
cloud-trust = "file://%s"

%s`, emu.URL(), emu.IDScope(), keyPath, keyPath, caPath, moduleTOML)
		for i, p := range principals {
			s += fmt.Sprintf("[[principal]]\nuid = %d\nname = %q\nidtype = [\"module\"]\n\n", 1100+i, p)
		}
		return s
	}}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out[:64])
}

type idJSON struct {
	Type string `json:"type"`
	Spec struct {
		HubName     string `json:"hubName"`
		GatewayHost string `json:"gatewayHost"`
		DeviceID    string `json:"deviceId"`
		ModuleID    string `json:"moduleId"`
		GenID       string `json:"genId"`
		Auth        *struct {
			Type      string `json:"type"`
			KeyHandle string `json:"keyHandle"`
		} `json:"auth"`
	} `json:"spec"`
}

func (d *daemon) hubModules(emu *emulator.Emulator, hub, device string) []string {
	var out []string
	for _, m := range emu.Modules(hub, device) {
		out = append(out, m.ModuleID)
	}
	return out
}

// TestIdentityDPSGroupEnrollment: wardend provisions through the emulator
// with a group enrollment, serves aziot's shapes, gives host processes
// module identities whose SAS tokens (signed by keyd through the derived
// handle) the hub accepts, reconciles on SIGHUP and restarts offline.
func TestIdentityDPSGroupEnrollment(t *testing.T) {
	needRoot(t)
	r := newIdentityRig(t)
	d := startDaemon(t, r.extra("hostproc-1"))
	idd := d.socket("identityd")

	// I2 as local root: the device, adjacently tagged, SAS with a key handle.
	resp := do(t, request{Socket: idd, Method: "POST", Target: "/identities/device?api-version=2020-09-01", Body: `{"type":"aziot"}`})
	var dev idJSON
	if resp.Status != 200 || json.Unmarshal(resp.Body, &dev) != nil || dev.Type != "aziot" || dev.Spec.DeviceID != "conf-dev-1" ||
		!strings.HasPrefix(dev.Spec.HubName, "localhost:") || dev.Spec.GatewayHost != dev.Spec.HubName ||
		dev.Spec.Auth == nil || dev.Spec.Auth.Type != "sas" || dev.Spec.Auth.KeyHandle == "" || dev.Spec.ModuleID != "" {
		t.Fatalf("I2 = %d %s", resp.Status, resp.Body)
	}
	hub := dev.Spec.HubName
	if got := d.hubModules(r.emu, hub, "conf-dev-1"); !slices.Equal(got, []string{"agent-b", "hostproc-1"}) {
		t.Fatalf("hub modules = %v", got)
	}

	runCases(t, idd, []socketCase{
		{"I4 before 2021-12-01", 0, "GET", "/identities/provisioning?api-version=2020-09-01", "", 404, "not found"},
		{"I4", 4000, "GET", "/identities/provisioning?api-version=2021-12-01", "", 200, `"source":"dps","auth":"symmetric_key"`},
		{"I5 without type", 0, "GET", "/identities/modules?api-version=2020-09-01", "", 400, `parameter \"type\" has an invalid value\ncaused by: missing parameter`},
		{"I5 type local", 0, "GET", "/identities/modules?api-version=2020-09-01&type=local", "", 400, `invalid type: local`},
		{"I5", 0, "GET", "/identities/modules?api-version=2020-09-01&type=aziot", "", 200, `"moduleId":"hostproc-1"`},
		{"I2 without type", 0, "POST", "/identities/device?api-version=2020-09-01", `{}`, 422, "missing field `type`"},
		{"I2 host process", uidB, "POST", "/identities/device?api-version=2020-09-01", `{"type":"aziot"}`, 401, "authorization error"},
		{"I7 another module", uidB, "GET", "/identities/modules/hostproc-1?api-version=2020-09-01&type=aziot", "", 401, "authorization error"},
		{"I7 own module", uidB, "GET", "/identities/modules/agent-b?api-version=2020-09-01&type=aziot", "", 200, `"moduleId":"agent-b"`},
		{"I1 unknown uid", 4000, "GET", "/identities/identity?api-version=2020-09-01", "", 401, "authorization error"},
		{"I10 unknown uid", 4000, "GET", "/trust-bundle?api-version=2020-09-01", "", 200, `{"certificate":""}`},
		{"I6 create", 0, "POST", "/identities/modules?api-version=2022-08-01", `{"type":"aziot","moduleId":"adhoc"}`, 200, `"moduleId":"adhoc"`},
		{"I8 update", 0, "PUT", "/identities/modules/adhoc?api-version=2022-08-01&type=aziot", `{}`, 200, `"keyHandle"`},
		{"I9 delete", 0, "DELETE", "/identities/modules/adhoc?api-version=2022-08-01&type=aziot", "", 204, ""},
		{"I7 deleted module", 0, "GET", "/identities/modules/adhoc?api-version=2022-08-01&type=aziot", "", 404, "Hub client error"},
		{"I3 host process", uidB, "POST", "/identities/device/reprovision?api-version=2021-12-01", `{"type":"aziot"}`, 401, "authorization error"},
		{"I3", 0, "POST", "/identities/device/reprovision?api-version=2021-12-01", `{"type":"aziot"}`, 204, ""},
		{"I3 without a body", 0, "POST", "/identities/device/reprovision?api-version=2021-12-01", "", 204, ""},
		{"I1 after reprovision", 0, "GET", "/identities/identity?api-version=2021-12-01", "", 200, `"deviceId":"conf-dev-1"`},
	})

	// I1 as the host process: its module; keyd signs a SAS token through
	// the derived handle and the hub accepts it.
	resp = doAs(t, uidB, request{Socket: idd, Method: "GET", Target: "/identities/identity?api-version=2020-09-01"})
	var mod idJSON
	if resp.Status != 200 || json.Unmarshal(resp.Body, &mod) != nil || mod.Spec.ModuleID != "agent-b" || mod.Spec.GenID == "" || mod.Spec.Auth == nil {
		t.Fatalf("I1 = %d %s", resp.Status, resp.Body)
	}
	sr := identity.EncodeSR(hub + "/devices/conf-dev-1/modules/agent-b")
	se := time.Now().Add(time.Hour).Unix()
	body, _ := json.Marshal(map[string]any{"keyHandle": mod.Spec.Auth.KeyHandle, "algorithm": "HMAC-SHA256",
		"parameters": map[string]any{"message": identity.StringToSign(sr, se)}})
	resp = doAs(t, uidB, request{Socket: d.socket("keyd"), Method: "POST", Target: "/sign?api-version=2020-09-01", Body: string(body)})
	var sig struct {
		Signature []byte `json:"signature"`
	}
	if resp.Status != 200 || json.Unmarshal(resp.Body, &sig) != nil {
		t.Fatalf("keyd /sign = %d %s", resp.Status, resp.Body)
	}
	if err := r.emu.VerifyModuleSAS(hub, "conf-dev-1", "agent-b", identity.Token(sr, sig.Signature, se, "")); err != nil {
		t.Fatalf("the hub refused the module's SAS token: %v", err)
	}

	// The Go client, as local root: device, modules, provisioning, and a
	// module SAS token minted through keyd that the hub accepts.
	t.Run("client", func(t *testing.T) {
		ctx := context.Background()
		c := identityd.New(idd)
		defer c.Close()
		k := keyd.New(d.socket("keyd"))
		defer k.Close()
		if dv, err := c.Identity(ctx); err != nil || dv.Spec.DeviceID != "conf-dev-1" || dv.Spec.ModuleID != "" {
			t.Fatalf("Identity = %+v, %v", dv, err)
		}
		if p, err := c.Provisioning(ctx); err != nil || p.Source != "dps" || p.RegistrationID != "conf-dev-1" {
			t.Fatalf("Provisioning = %+v, %v", p, err)
		}
		if ms, err := c.Modules(ctx); err != nil || len(ms) != 2 || ms[0].Spec.Auth != nil {
			t.Fatalf("Modules = %+v, %v", ms, err)
		}
		m, err := c.Module(ctx, "hostproc-1")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := identityd.SASToken(ctx, k, m, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.emu.VerifyModuleSAS(hub, "conf-dev-1", "hostproc-1", tok); err != nil {
			t.Fatalf("the hub refused %s: %v", tok, err)
		}
	})

	// A principal removed from the config loses its module on SIGHUP.
	if err := os.WriteFile(d.cfgPath, []byte(baseConfig(d.dir)+r.extra()), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "hostproc-1 deleted on reload", func() string {
		if got := d.hubModules(r.emu, hub, "conf-dev-1"); !slices.Equal(got, []string{"agent-b"}) {
			return fmt.Sprintf("hub modules = %v", got)
		}
		return ""
	})

	// Offline: the emulator is gone; a restart serves from the backups.
	r.emu.Close()
	d.restart()
	resp = doAs(t, uidB, request{Socket: idd, Method: "GET", Target: "/identities/identity?api-version=2020-09-01"})
	var off idJSON
	if resp.Status != 200 || json.Unmarshal(resp.Body, &off) != nil || off.Spec.GenID != mod.Spec.GenID {
		t.Fatalf("offline I1 = %d %s", resp.Status, resp.Body)
	}
}
