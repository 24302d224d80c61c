package identityd

import (
	"context"
	"slices"
	"testing"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/broker/tpmd"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// TestDPSTPM registers with TPM attestation against swtpm: the dps module
// answers the 401 challenge with tpm.import_auth_key and signs with
// tpm.sign, imports the hub key of the assignment, and the hub module signs
// the device's tokens with it.
func TestDPSTPM(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := tpmd.OpenTPM(config.TPM{TCTI: sw.TCTI(), AuthKeyIndex: config.DefaultAuthKeyIndex}, nil)
	defer tp.Close()
	r := newRigTPM(t, emulator.Options{}, tp)
	if err := r.emu.AddTPMEnrollment(emulator.TPMEnrollment{RegistrationID: "tpm-dev"}); err != nil {
		t.Fatal(err)
	}
	cfg := r.dpsConfig("tpm-dev", "", "tmod")
	cfg.Provisioning.Attestation = &config.Attestation{Method: "tpm", RegistrationID: &config.RegistrationID{Name: "tpm-dev"}}
	s, err := r.server(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.DeviceIdentity(context.Background())
	if err != nil || id.Spec.DeviceID != "tpm-dev" || id.Spec.Auth.Type != "tpm" || id.Spec.Auth.KeyHandle != "" {
		t.Fatalf("device identity = %+v, %v", id, err)
	}
	if got := moduleIDs(r, s.Device()); !slices.Equal(got, []string{"tmod"}) {
		t.Fatalf("hub modules = %v", got)
	}
}
