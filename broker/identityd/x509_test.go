package identityd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
)

// TestDPSX509 registers with a TLS client certificate whose key is in the
// key store (the host does TLS by store ID) and manages modules with it.
func TestDPSX509(t *testing.T) {
	r, s, cfg := dpsX509(t)
	ctx := context.Background()
	id, err := s.DeviceIdentity(ctx)
	if err != nil || id.Spec.DeviceID != "x509-dev" || id.Spec.Auth.Type != "x509" || id.Spec.Auth.CertID != DeviceKeyID || id.Spec.Auth.KeyHandle == "" {
		t.Fatalf("device identity = %+v, %v", id, err)
	}
	if got := moduleIDs(r, s.Device()); !slices.Equal(got, []string{"xmod"}) {
		t.Fatalf("hub modules = %v", got)
	}
	s.opts.CertPEM = func(ctx context.Context, id string) ([]byte, error) { return r.certs.Get(ctx, id) }
	if got := s.registrationID(ctx, cfg.Provisioning); got != "x509-dev" {
		t.Fatalf("I4 registration_id = %q", got)
	}
}

// TestCertRenewedReprovisions: once certd has renewed the device identity
// certificate of a DPS X.509 attestation, identityd registers again with
// it (aziot's device-ID renewal); other certificates change nothing.
func TestCertRenewedReprovisions(t *testing.T) {
	r, s, _ := dpsX509(t)
	ctx := context.Background()
	operation := func() string {
		regs := r.emu.Registrations()
		if len(regs) != 1 || regs[0].Status != "assigned" {
			t.Fatalf("registrations %+v", regs)
		}
		return regs[0].OperationID
	}
	first := operation()
	s.CertRenewed(ctx, "edge-ca")
	if operation() != first {
		t.Fatal("a renewal of another certificate reprovisioned")
	}
	s.CertRenewed(ctx, DeviceKeyID)
	if operation() == first {
		t.Fatal("no DPS registration after the device identity certificate was renewed")
	}
	if id, err := s.DeviceIdentity(ctx); err != nil || id.Spec.DeviceID != "x509-dev" {
		t.Fatalf("device identity after reprovisioning = %+v, %v", id, err)
	}
}

// dpsX509 provisions a device through the emulator's DPS with an X.509
// group enrollment: the device certificate is issued by the group's CA for
// key pair device-id, and module xmod is configured.
func dpsX509(t *testing.T) (*rig, *Server, *config.Config) {
	t.Helper()
	r := newRig(t, emulator.Options{})
	ctx := context.Background()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Warden test device CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := r.emu.AddX509Enrollment(emulator.X509Enrollment{Name: "x509-group", CAPEM: string(caPEM)}); err != nil {
		t.Fatal(err)
	}
	if err := r.keys.CreateKeyPair(ctx, DeviceKeyID, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	pub, err := r.keys.PublicKey(ctx, DeviceKeyID)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "x509-dev"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	r.certs[DeviceKeyID] = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...)
	cfg := r.dpsConfig("x509-dev", "", "xmod")
	// No registration_id: the module reads the certificate's CN.
	cfg.Provisioning.Attestation = &config.Attestation{Method: "x509",
		IdentityCert: &config.CertSource{Ref: DeviceKeyID}, IdentityPK: DeviceKeyID}
	s, err := r.server(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, s, cfg
}
