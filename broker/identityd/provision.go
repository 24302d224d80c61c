package identityd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/wasm-modules/dps/dpsjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// credential is how the device authenticates to DPS and the hub.
type credential struct {
	// kind is "sas" (DeviceKeyID), "x509" (certID + keyID over TLS) or
	// "tpm" (the TPM auth key, used by the modules).
	kind   string
	certID string
	keyID  string
}

// credentialOf returns the device credential of cfg's provisioning.
func credentialOf(p *config.Provisioning) credential {
	switch {
	case p == nil:
	case p.Source == "manual" && p.Authentication != nil && p.Authentication.Method == "x509":
		return x509Credential(p.Authentication.IdentityCert, p.Authentication.IdentityPK)
	case p.Source == "dps" && p.Attestation != nil && p.Attestation.Method == "x509":
		return x509Credential(p.Attestation.IdentityCert, p.Attestation.IdentityPK)
	case p.Source == "dps" && p.Attestation != nil && p.Attestation.Method == "tpm":
		return credential{kind: "tpm"}
	}
	return credential{kind: "sas", keyID: DeviceKeyID}
}

// x509Credential names the store IDs certd uses for the identity cert and
// key: a URI reference is preloaded as "device-id", an ID is used as is.
func x509Credential(cert *config.CertSource, pk string) credential {
	c := credential{kind: "x509", certID: DeviceKeyID, keyID: DeviceKeyID}
	if cert != nil && cert.Ref != "" && !config.IsURI(cert.Ref) {
		c.certID = cert.Ref
	}
	if pk != "" && !config.IsURI(pk) {
		c.keyID = pk
	}
	return c
}

// Start provisions at startup (§8.5): manual from the configuration, DPS
// from device_info when it parses (no cloud call) or by registering, then
// reconciles module identities. A network failure of the hub keeps the
// service running on backups; it fails only when DPS registration fails and
// no backup exists.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cfg.Provisioning
	if p == nil || p.Source == "none" {
		s.log.Info("identity: provisioning source none; only local identities are served")
		return nil
	}
	if err := s.provisionLocked(ctx, true); err != nil {
		return fmt.Errorf("identity: provisioning: %w", err)
	}
	if err := s.reconcileLocked(ctx); err != nil {
		if IsNetwork(err) {
			s.log.Warn("identity: the hub is unreachable; serving module identities from backups", "err", err)
			return nil
		}
		if p.Source != "dps" {
			s.log.Error("identity: module reconciliation failed", "err", err)
			return nil
		}
		s.log.Warn("identity: module reconciliation failed; registering with DPS again", "err", err)
		if err := s.provisionLocked(ctx, false); err != nil {
			if IsNetwork(err) {
				s.log.Warn("identity: DPS unreachable; serving from backups", "err", err)
				return nil
			}
			return fmt.Errorf("identity: provisioning: %w", err)
		}
		if err := s.reconcileLocked(ctx); err != nil {
			s.log.Error("identity: module reconciliation failed", "err", err)
		}
	}
	return nil
}

// Reprovision is the API trigger (I3): forget device_info and the module
// backups, register again (never from backup) and reconcile; hub errors
// are returned.
func (s *Server) Reprovision(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cfg.Provisioning
	if p == nil || p.Source == "none" {
		return ErrDeviceNotFound
	}
	if s.state != nil {
		if err := s.state.ClearDevice(); err != nil {
			return err
		}
	}
	s.device = nil
	if err := s.provisionLocked(ctx, false); err != nil {
		return err
	}
	return s.reconcileLocked(ctx)
}

// CertRenewed is told of every certificate certd renewed on its own. After
// a renewal of the device identity of a DPS X.509 attestation it
// reprovisions, as aziot does: DPS registers the device with the new
// certificate (a group enrollment accepts it; an individual one pins the
// old certificate and refuses it, which is logged).
func (s *Server) CertRenewed(ctx context.Context, certID string) {
	s.mu.Lock()
	p := s.cfg.Provisioning
	dps := p != nil && p.Source == "dps"
	cred := credentialOf(p)
	s.mu.Unlock()
	if !dps || cred.kind != "x509" || cred.certID != certID {
		return
	}
	s.log.Info("device identity certificate renewed; reprovisioning with DPS", "cert", certID)
	if err := s.Reprovision(ctx); err != nil {
		s.log.Error("reprovisioning after the device identity certificate was renewed failed", "cert", certID, "err", err)
		return
	}
	s.log.Info("reprovisioned with the renewed device identity certificate", "cert", certID)
}

// Reload applies a new configuration (principals, provisioning settings)
// and only reconciles module identities: no DPS call (§8.5).
func (s *Server) Reload(ctx context.Context, cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	if p := cfg.Provisioning; p == nil || p.Source == "none" {
		s.device = nil // no longer provisioned; the backups stay on disk
		return nil
	}
	if s.device == nil {
		return nil
	}
	return s.reconcileLocked(ctx)
}

// provisionLocked sets s.device. useBackup lets DPS start from device_info.
func (s *Server) provisionLocked(ctx context.Context, useBackup bool) error {
	p := s.cfg.Provisioning
	var dev *identity.Device
	switch p.Source {
	case "manual":
		d, err := s.manual(ctx, p)
		if err != nil {
			return err
		}
		dev = d
	case "dps":
		if err := s.dpsKey(ctx, p); err != nil {
			return err
		}
		if useBackup && s.state != nil {
			if d, err := s.state.Device(); err == nil {
				s.log.Info("identity: provisioned from device_info (no DPS call)", "hub", d.HubName, "device_id", d.DeviceID)
				s.device = d
				return nil
			} else if !errors.Is(err, identity.ErrNoBackup) {
				s.log.Warn("identity: device_info unusable; registering with DPS", "err", err)
			}
		}
		d, err := s.register(ctx, p)
		if err != nil {
			return err
		}
		dev = d
	default:
		return fmt.Errorf("provisioning source %q", p.Source)
	}
	if s.cfg.LocalGatewayHostname != "" {
		dev.GatewayHost = s.cfg.LocalGatewayHostname
	}
	if s.state != nil {
		if err := s.state.SetDevice(dev); err != nil {
			return err
		}
	}
	s.device = dev
	s.log.Info("identity: device provisioned", "source", p.Source, "hub", dev.HubName, "device_id", dev.DeviceID)
	return nil
}

// manual provisions from the configuration; a SAS key given by value (or in
// the connection string) is imported into the key store as device-id.
func (s *Server) manual(ctx context.Context, p *config.Provisioning) (*identity.Device, error) {
	if p.ConnectionString != "" {
		cs, err := identity.ParseConnectionString(p.ConnectionString)
		if err != nil {
			return nil, err
		}
		if err := s.importDeviceKey(ctx, cs.SharedAccessKey); err != nil {
			return nil, err
		}
		// Only HostName, DeviceId and SharedAccessKey count, as in aziot
		// (GatewayHostName is ignored): the gateway is the hub unless
		// local_gateway_hostname is configured (provisionLocked).
		return &identity.Device{HubName: cs.HostName, GatewayHost: cs.HostName, DeviceID: cs.DeviceID}, nil
	}
	if a := p.Authentication; a != nil && a.Method == "sas" && a.DeviceIDPK != nil {
		if err := s.symmetricKey(ctx, a.DeviceIDPK); err != nil {
			return nil, err
		}
	}
	return &identity.Device{HubName: p.IothubHostname, GatewayHost: p.IothubHostname, DeviceID: p.DeviceID}, nil
}

// dpsKey puts the device key of symmetric-key attestation in the store:
// derived from the group key for a group enrollment, else the configured key.
func (s *Server) dpsKey(ctx context.Context, p *config.Provisioning) error {
	a := p.Attestation
	if a == nil || a.Method != "symmetric_key" {
		return nil
	}
	if _, group := s.cfg.PreloadedKeys[GroupKeyID]; group {
		key, err := s.opts.Keys.DeriveKey(ctx, GroupKeyID, []byte(a.RegistrationID.Name))
		if err != nil {
			return &CloudError{Client: "Key", Err: wrapf(err, "derive the device key from the group key")}
		}
		return s.importDeviceKey(ctx, key)
	}
	return s.symmetricKey(ctx, a.SymmetricKey)
}

// symmetricKey imports a configured key: by value, or from a file:// URI.
func (s *Server) symmetricKey(ctx context.Context, k *config.SymmetricKey) error {
	if k == nil {
		return nil
	}
	if k.Value != "" {
		b, err := k.Bytes()
		if err != nil {
			return err
		}
		return s.importDeviceKey(ctx, b)
	}
	u, err := url.Parse(k.URI)
	if err != nil || u.Scheme != "file" {
		// Named by its scheme only: a pkcs11: URI, which the configuration
		// accepts, carries its PIN.
		scheme, _, _ := strings.Cut(k.URI, ":")
		return fmt.Errorf("symmetric key: %s: URIs are not supported, only value and file:// URIs", scheme)
	}
	b, err := os.ReadFile(u.Path)
	if err != nil {
		return fmt.Errorf("symmetric key: %w", err)
	}
	return s.importDeviceKey(ctx, b)
}

func (s *Server) importDeviceKey(ctx context.Context, key []byte) error {
	if err := s.opts.Keys.ImportKey(ctx, DeviceKeyID, key, hsm.UsageSign); err != nil {
		return &CloudError{Client: "Key", Err: wrapf(err, "import the device key")}
	}
	return nil
}

// tlsOptions are the trust anchors and, for X.509, the client credential.
func (s *Server) tlsOptions(cfg *config.Config, c credential) *guest.TLSOptions {
	t := &guest.TLSOptions{}
	if _, ok := cfg.PreloadedCerts[CloudTrustCertID]; ok {
		t.TrustCertIDs = []string{CloudTrustCertID}
		t.SystemRoots = true
	}
	if c.kind == "x509" {
		t.ClientCertID, t.ClientKeyID = c.certID, c.keyID
	}
	return t
}

// register runs the dps module.
func (s *Server) register(ctx context.Context, p *config.Provisioning) (*identity.Device, error) {
	a := p.Attestation
	if a == nil {
		return nil, errors.New("dps: no attestation")
	}
	regID := ""
	if r := a.RegistrationID; r != nil {
		regID = r.Name
		if regID == "" && r.Subject != nil {
			regID = r.Subject["CN"] // a subject table names the CN
		}
	}
	cred := credentialOf(p)
	if regID == "" && cred.kind != "x509" {
		return nil, &CloudError{Client: "DPS", Err: errors.New("attestation needs registration_id")}
	}
	job := dpsjob.Job{Endpoint: p.GlobalEndpoint, ScopeID: p.IDScope, RegistrationID: regID,
		TLS: s.tlsOptions(s.cfg, cred), PollMS: s.opts.PollMS, ThrottleMS: s.opts.ThrottleMS, TPM: cred.kind == "tpm",
		Retries: s.cfg.CloudRetries, RetryDelayMS: s.opts.RetryDelayMS}
	timeout := s.jobTimeout(s.cfg)
	if cred.kind == "sas" {
		// The module mints a fresh 30 s token per request with the device
		// key (derived from the group key for a group enrollment, dpsKey).
		job.KeyID = cred.keyID
	}
	if p.Payload != nil {
		b, err := readPayload(p.Payload.URI)
		if err != nil {
			return nil, err
		}
		job.Payload = b
	}
	var res dpsjob.Result
	if err := s.runJob(ctx, "DPS", DPSModule, &job, &res, timeout); err != nil {
		return nil, err
	}
	s.payload = res.Payload
	return &identity.Device{HubName: res.AssignedHub, GatewayHost: res.AssignedHub, DeviceID: res.DeviceID}, nil
}

// readPayload reads the custom allocation payload (a file:// JSON file).
func readPayload(uri string) (json.RawMessage, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" {
		return nil, fmt.Errorf("payload %q: not a file:// URI", uri)
	}
	b, err := os.ReadFile(u.Path)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("payload %s: not JSON", u.Path)
	}
	return json.RawMessage(b), nil
}

// runJob runs a module job and classifies its failure as a CloudError.
func (s *Server) runJob(ctx context.Context, client, module string, job, out any, timeout time.Duration) error {
	in, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("%s job: %w", module, err)
	}
	if s.opts.Modules == nil {
		return &CloudError{Client: client, Err: fmt.Errorf("no module host")}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := s.opts.Modules.Run(ctx, module, in)
	if err != nil {
		ce := &CloudError{Client: client, Err: err}
		var ge *guest.Error
		if errors.As(err, &ge) {
			switch ge.Code {
			case dpsjob.CodeNetwork, guest.CodeUnavailable:
				ce.Network = true
			case "hub_not_found":
				ce.NotFound = true
			}
			ce.Err = fmt.Errorf("%s", strings.TrimSpace(ge.Message))
		}
		return ce
	}
	if err := json.Unmarshal(res.Output, out); err != nil {
		return &CloudError{Client: client, Err: fmt.Errorf("module %s result: %w", module, err)}
	}
	return nil
}
