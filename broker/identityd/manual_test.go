package identityd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
)

func TestManualProvisioning(t *testing.T) {
	r := newRig(t, emulator.Options{})
	hd, err := r.emu.AddHubDevice(emulator.HubDevice{DeviceID: "manual-1"})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(r.keyFS, "device.key")
	raw, _ := (&config.SymmetricKey{Value: hd.PrimaryKey}).Bytes()
	os.WriteFile(keyFile, raw, 0o600)
	hub := hd.IoTHub
	tests := []struct {
		name string
		prov *config.Provisioning
	}{
		{"connection string", &config.Provisioning{Source: "manual",
			ConnectionString: "HostName=" + hub + ";DeviceId=manual-1;SharedAccessKey=" + hd.PrimaryKey}},
		{"symmetric key by value", &config.Provisioning{Source: "manual", IothubHostname: hub, DeviceID: "manual-1",
			Authentication: &config.ManualAuthentication{Method: "sas", DeviceIDPK: &config.SymmetricKey{Value: hd.PrimaryKey}}}},
		{"symmetric key by file URI", &config.Provisioning{Source: "manual", IothubHostname: hub, DeviceID: "manual-1",
			Authentication: &config.ManualAuthentication{Method: "sas", DeviceIDPK: &config.SymmetricKey{URI: "file://" + keyFile}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.dir = t.TempDir()
			r.openKeys(t, nil)
			cfg := r.dpsConfig("", "", "hp")
			cfg.Provisioning = tc.prov
			s, err := r.server(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			id, err := s.DeviceIdentity(context.Background())
			if err != nil || id.Spec.HubName != hub || id.Spec.DeviceID != "manual-1" || id.Spec.Auth.Type != "sas" {
				t.Fatalf("device identity = %+v, %v", id, err)
			}
			if got := moduleIDs(r, s.Device()); !slices.Contains(got, "hp") {
				t.Fatalf("hub modules = %v", got)
			}
		})
	}
	// Not provisioned: device identity not found.
	r.dir = t.TempDir()
	r.openKeys(t, nil)
	s, err := r.server(t, &config.Config{Provisioning: &config.Provisioning{Source: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeviceIdentity(context.Background()); err != ErrDeviceNotFound {
		t.Fatalf("source none: %v", err)
	}
}

// TestReloadWithoutProvisioning: a reload that removes [provisioning]
// leaves the device unprovisioned instead of failing.
func TestReloadWithoutProvisioning(t *testing.T) {
	r := newRig(t, emulator.Options{})
	s, _ := started(t, r, "m1")
	if err := s.Reload(context.Background(), &config.Config{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeviceIdentity(context.Background()); err != ErrDeviceNotFound {
		t.Fatalf("after reload without provisioning: %v", err)
	}
}

// TestUnsupportedKeyURIHidesPIN: a symmetric key by pkcs11: URI, which
// the configuration accepts but identityd cannot use, fails the start
// without quoting the URI's PIN (wardend logs the error as it stops).
func TestUnsupportedKeyURIHidesPIN(t *testing.T) {
	ctx := context.Background()
	k, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cfg := &config.Config{Provisioning: &config.Provisioning{Source: "manual", IothubHostname: "hub.example", DeviceID: "d",
		Authentication: &config.ManualAuthentication{Method: "sas",
			DeviceIDPK: &config.SymmetricKey{URI: "pkcs11:slot-id=0;object=device-id?pin-value=s3cr3t"}}}}
	s, err := New(nil, cfg, Options{Keys: k, Handles: hsm.NewHandles(k), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil || !strings.Contains(err.Error(), "pkcs11") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("Start = %v, want an error naming the pkcs11: URI without its PIN", err)
	}
}
