package conformance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
)

// nodeSDK returns the node binary and the conformance/node directory with
// the official Azure IoT Node SDK installed (scripts/deps.sh runs npm ci);
// without them the test fails under CI and is skipped otherwise.
func nodeSDK(t *testing.T) (node, dir string) {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s (make deps installs it)", what)
		}
		t.Skipf("%s (make deps installs it)", what)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH")
	}
	dir, err = filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"azure-iot-provisioning-device-http", "azure-iot-security-symmetric-key", "azure-iot-security-x509", "azure-iothub"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			missing("npm package " + pkg + " is not installed in conformance/node")
		}
	}
	return node, dir
}

// runNode runs one script of conformance/node with arg as its JSON
// argument, trusting the emulator's CA, and decodes the JSON line it
// prints.
func runNode(t *testing.T, node, dir, caFile, script string, arg any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(arg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, string(b))
	cmd.Dir = dir
	// The machine may point NODE_EXTRA_CA_CERTS at the system bundle;
	// override it for this command only.
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node %s: %v\n%s%s", script, err, out, stderr)
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node %s printed %q: %v", script, out, err)
	}
	return res
}

// TestEmulatorNodeSDK: the official Azure IoT Node SDK proves the
// emulator. azure-iot-provisioning-device-http with
// azure-iot-security-symmetric-key registers with an individual and a
// group enrollment (payload echoed) and gets 401 with a wrong key;
// azure-iot-security-x509 registers with a client certificate of the
// enrollment CA and not with another CA's;
// azure-iothub's Registry, with a device SAS, creates, gets, lists,
// updates and deletes a module (spec/protocols.md §2.6).
func TestEmulatorNodeSDK(t *testing.T) {
	node, dir := nodeSDK(t)
	em, err := emulator.New(emulator.Options{AssignAfterPolls: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := em.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	caFile := filepath.Join(t.TempDir(), "emulator-ca.pem")
	if err := os.WriteFile(caFile, em.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	ind, err := em.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "node-individual"})
	if err != nil {
		t.Fatal(err)
	}
	grp, err := em.AddGroupEnrollment(emulator.GroupEnrollment{Name: "node-group"})
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]any{"port": em.Port(), "scope": em.IDScope()}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	t.Run("register", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			arg  map[string]any
			ok   bool
		}{
			{"individual", with("registrationId", "node-individual", "key", ind.PrimaryKey, "payload", map[string]any{"model": "n1"}), true},
			{"group", with("registrationId", "node-group-dev", "groupKey", grp.PrimaryKey), true},
			{"wrong key", with("registrationId", "node-individual", "key", emulator.NewKey()), false},
			{"wrong group key", with("registrationId", "node-group-dev2", "groupKey", emulator.NewKey()), false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				res := runNode(t, node, dir, caFile, "register.js", tc.arg)
				if ok, _ := res["ok"].(bool); ok != tc.ok {
					t.Fatalf("ok=%v, want %v: %v", ok, tc.ok, res)
				}
				if !tc.ok {
					e, _ := res["error"].(map[string]any)
					if e["name"] != "UnauthorizedError" || e["status"] != float64(401) {
						t.Fatalf("error %v, want UnauthorizedError with 401", e)
					}
					return
				}
				r, _ := res["result"].(map[string]any)
				if r["status"] != "assigned" || r["assignedHub"] != em.HubHostname() || r["deviceId"] != tc.arg["registrationId"] {
					t.Fatalf("result %v", r)
				}
				if p := tc.arg["payload"]; p != nil {
					if got, _ := json.Marshal(r["payload"]); string(got) != `{"model":"n1"}` {
						t.Fatalf("payload %s", got)
					}
				}
			})
		}
		for _, id := range []string{"node-individual", "node-group-dev"} {
			found := false
			for _, d := range em.Devices() {
				found = found || d.DeviceID == id
			}
			if !found {
				t.Errorf("device %s is not on the hub", id)
			}
		}
	})
	t.Run("x509", func(t *testing.T) {
		tmp := t.TempDir()
		ca, caKey := nodeTestCA(t, "node enrollment CA")
		if err := em.AddX509Enrollment(emulator.X509Enrollment{Name: "node", CAPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))}); err != nil {
			t.Fatal(err)
		}
		stranger, strangerKey := nodeTestCA(t, "stranger")
		for _, tc := range []struct {
			name   string
			issuer *x509.Certificate
			key    *ecdsa.PrivateKey
			ok     bool
		}{{"enrolled CA", ca, caKey, true}, {"other CA", stranger, strangerKey, false}} {
			certFile, keyFile := nodeLeaf(t, tmp, tc.name, "node-x509", tc.issuer, tc.key)
			res := runNode(t, node, dir, caFile, "register_x509.js", with("registrationId", "node-x509", "certFile", certFile, "keyFile", keyFile))
			if ok, _ := res["ok"].(bool); ok != tc.ok {
				t.Fatalf("%s: ok=%v: %v", tc.name, ok, res)
			}
			if r, _ := res["result"].(map[string]any); tc.ok && (r["status"] != "assigned" || r["deviceId"] != "node-x509") {
				t.Fatalf("%s: %v", tc.name, r)
			}
		}
	})
	t.Run("registry", func(t *testing.T) {
		dev, err := em.AddHubDevice(emulator.HubDevice{DeviceID: "node-edge"})
		if err != nil {
			t.Fatal(err)
		}
		pk, sk := emulator.NewKey(), emulator.NewKey()
		res := runNode(t, node, dir, caFile, "modules.js", map[string]any{"port": em.Port(), "deviceId": "node-edge",
			"deviceKey": dev.PrimaryKey, "moduleId": "node-mod", "newPrimaryKey": pk, "newSecondaryKey": sk})
		if ok, _ := res["ok"].(bool); !ok {
			t.Fatalf("%v", res)
		}
		steps, _ := res["steps"].(map[string]any)
		added, _ := steps["addModule"].(map[string]any)
		got, _ := steps["getModule"].(map[string]any)
		list, _ := steps["getModulesOnDevice"].([]any)
		upd, _ := steps["updateModule"].(map[string]any)
		if added["generationId"] == "" || got["generationId"] != added["generationId"] || len(list) != 1 {
			t.Fatalf("add/get/list: %v", steps)
		}
		auth, _ := upd["authentication"].(map[string]any)
		keys, _ := auth["symmetricKey"].(map[string]any)
		if keys["primaryKey"] != pk || keys["secondaryKey"] != sk {
			t.Fatalf("update: %v", upd)
		}
		if e, _ := steps["getAfterRemove"].(map[string]any); e["status"] != float64(404) {
			t.Fatalf("get after remove: %v", steps["getAfterRemove"])
		}
		if m := em.Modules(em.HubHostname(), "node-edge"); len(m) != 0 {
			t.Fatalf("modules left: %+v", m)
		}
		var seen []string
		for _, ev := range em.Events() {
			if ev.ID == "node-edge/node-mod" || ev.ID == "node-edge" {
				seen = append(seen, string(ev.Op))
			}
		}
		want := []string{"hub.putModule", "hub.getModule", "hub.listModules", "hub.putModule", "hub.deleteModule", "hub.getModule"}
		if len(seen) != len(want) {
			t.Fatalf("calls %v, want %v", seen, want)
		}
		for i := range want {
			if seen[i] != want[i] {
				t.Fatalf("calls %v, want %v", seen, want)
			}
		}
	})
}

// nodeTestCA is a CA for X.509 enrollments.
func nodeTestCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// nodeLeaf writes a client certificate for cn issued by ca, and its key.
func nodeLeaf(t *testing.T, dir, name, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	return certFile, keyFile
}
