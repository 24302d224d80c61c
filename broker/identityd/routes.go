package identityd

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
)

// Identity is aziot's adjacently tagged identity (§6.2).
type Identity struct {
	Type string     `json:"type"`
	Spec *AziotSpec `json:"spec"`
}

// AziotSpec is the spec of an "aziot" identity.
type AziotSpec struct {
	HubName     string `json:"hubName"`
	GatewayHost string `json:"gatewayHost"`
	DeviceID    string `json:"deviceId"`
	ModuleID    string `json:"moduleId,omitempty"`
	GenID       string `json:"genId,omitempty"`
	Auth        *Auth  `json:"auth,omitempty"`
}

// Auth is an identity's credential: a key handle, and a cert ID for X.509.
type Auth struct {
	Type      string `json:"type"`
	KeyHandle string `json:"keyHandle,omitempty"`
	CertID    string `json:"certId,omitempty"`
}

// device returns the provisioned device or ErrDeviceNotFound.
func (s *Server) deviceLocked() (*identity.Device, error) {
	if s.device == nil {
		return nil, ErrDeviceNotFound
	}
	return s.device, nil
}

// DeviceIdentity is the device's identity with its credential handle.
func (s *Server) DeviceIdentity(ctx context.Context) (*Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dev, err := s.deviceLocked()
	if err != nil {
		return nil, err
	}
	spec := &AziotSpec{HubName: dev.HubName, GatewayHost: dev.GatewayHost, DeviceID: dev.DeviceID}
	p := s.cfg.Provisioning
	switch c := credentialOf(p); {
	case c.kind == "tpm":
		spec.Auth = &Auth{Type: "tpm"}
	case c.kind == "x509":
		h, err := s.opts.Handles.Issue(ctx, hsm.KeyRef{Kind: hsm.KindKeyPair, ID: c.keyID})
		if err != nil {
			return nil, &CloudError{Client: "Key", Err: err}
		}
		spec.Auth = &Auth{Type: "x509", KeyHandle: h, CertID: c.certID}
	default:
		h, err := s.opts.Handles.Issue(ctx, hsm.KeyRef{Kind: hsm.KindKey, ID: DeviceKeyID})
		if err != nil {
			return nil, &CloudError{Client: "Key", Err: err}
		}
		spec.Auth = &Auth{Type: "sas", KeyHandle: h}
	}
	return &Identity{Type: "aziot", Spec: spec}, nil
}

// moduleIdentity renders m; withAuth adds the derived key handle.
func (s *Server) moduleIdentity(ctx context.Context, dev *identity.Device, m *identity.Module, withAuth bool) (*Identity, error) {
	spec := &AziotSpec{HubName: dev.HubName, GatewayHost: dev.GatewayHost, DeviceID: dev.DeviceID,
		ModuleID: m.ModuleID, GenID: m.GenerationID}
	if withAuth {
		if m.GenerationID == "" {
			return nil, ErrModuleNotFound
		}
		h, err := s.ModuleKeyHandle(ctx, m.ModuleID, m.GenerationID)
		if err != nil {
			return nil, err
		}
		spec.Auth = &Auth{Type: "sas", KeyHandle: h}
	}
	return &Identity{Type: "aziot", Spec: spec}, nil
}

// ModuleIdentity is I7 for module id (hub first, backups on network errors).
func (s *Server) ModuleIdentity(ctx context.Context, id string) (*Identity, error) {
	return s.withModule(ctx, id, s.getModuleLocked)
}

func (s *Server) withModule(ctx context.Context, id string,
	fn func(context.Context, *identity.Device, string) (*identity.Module, error)) (*Identity, error) {
	if err := checkModuleID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dev, err := s.deviceLocked()
	if err != nil {
		return nil, err
	}
	m, err := fn(ctx, dev, id)
	if err != nil {
		return nil, err
	}
	return s.moduleIdentity(ctx, dev, m, true)
}

// checkModuleID refuses an empty or blank module ID before any hub call,
// as aziot's identity manager does.
func checkModuleID(id string) error {
	if strings.TrimSpace(id) == "" {
		return api.InvalidParameter("module_id", errors.New("module name cannot be empty"))
	}
	return nil
}

// typeParam checks the mandatory "type" query parameter against allowed.
func typeParam(r *http.Request, allowed ...string) (string, error) {
	q := r.URL.Query()
	if !q.Has("type") {
		return "", api.InvalidParameter("type", errors.New("missing parameter"))
	}
	t := q.Get("type")
	for _, a := range allowed {
		if t == a {
			return t, nil
		}
	}
	return "", api.InvalidParameter("type", fmt.Errorf("invalid type: %s", t))
}

// callerModule is the module name of a host-process caller ("" otherwise).
func (s *Server) callerModule(r *http.Request) string {
	c, ok := s.guard.Caller(r.Context())
	if !ok {
		return ""
	}
	cfg := s.config()
	for _, p := range cfg.Principals {
		if p.UID == c.UID && p.Name != "" && p.IDType != nil {
			return p.Name
		}
	}
	return ""
}

// getIdentity is I1: the device identity when the caller may get it, else
// the host process's own module identity.
func (s *Server) getIdentity(w http.ResponseWriter, r *http.Request) {
	if s.authorize(r, "get", "identity:device") == nil {
		s.writeIdentity(w, r, func() (*Identity, error) { return s.DeviceIdentity(r.Context()) })
		return
	}
	m := s.callerModule(r)
	if m == "" {
		api.WriteError(w, r, s.log, api.Unauthorized("authorization error"))
		return
	}
	if err := s.authorize(r, "get", "identity:module:"+m); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	s.writeIdentity(w, r, func() (*Identity, error) { return s.ModuleIdentity(r.Context(), m) })
}

func (s *Server) writeIdentity(w http.ResponseWriter, r *http.Request, fn func() (*Identity, error)) {
	id, err := fn()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, id)
}

type typeBody struct {
	Type        *string         `json:"type"`
	ModuleID    *string         `json:"moduleId"`
	LocalIDOpts json.RawMessage `json:"localIdOpts"`
}

func requireType(w http.ResponseWriter, r *http.Request, b *typeBody) error {
	if err := api.RequireJSON(w, r, b); err != nil {
		return err
	}
	if b.Type == nil {
		return &api.Error{Status: http.StatusUnprocessableEntity, Message: "missing field `type`"}
	}
	return nil
}

// getDevice is I2.
func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	var b typeBody
	if err := requireType(w, r, &b); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.authorize(r, "get", "identity:device"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	s.writeIdentity(w, r, func() (*Identity, error) { return s.DeviceIdentity(r.Context()) })
}

// reprovision is I3: any body or none.
func (s *Server) reprovision(w http.ResponseWriter, r *http.Request) {
	var body any
	if err := api.ReadJSON(w, r, &body); err != nil && !errors.Is(err, api.ErrNoBody) {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.authorize(r, "reprovision", "identity:device"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.Reprovision(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	api.NoContent(w)
}

// provisioning is I4 (no check in aziot; the policy opens it to all).
func (s *Server) provisioning(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, "provisioning", "identity:device"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	cfg := s.config()
	p := cfg.Provisioning
	switch {
	case p == nil || p.Source == "none":
		api.WriteJSON(w, http.StatusOK, map[string]any{"source": "none"})
	case p.Source == "manual":
		auth := "sas"
		if credentialOf(p).kind == "x509" {
			auth = "x509"
		}
		api.WriteJSON(w, http.StatusOK, struct {
			Source string `json:"source"`
			Auth   string `json:"auth"`
		}{"manual", auth})
	default:
		a := p.Attestation
		out := dpsInfo{Source: "dps", Auth: a.Method, Endpoint: p.GlobalEndpoint, ScopeID: p.IDScope}
		out.RegistrationID = s.registrationID(r.Context(), p)
		if p.Payload != nil {
			if b, err := readPayload(p.Payload.URI); err == nil {
				out.Payload = b
			}
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}

// registrationID is the configured DPS registration ID (a subject table's
// CN), else for X.509 the CN of the identity certificate.
func (s *Server) registrationID(ctx context.Context, p *config.Provisioning) string {
	a := p.Attestation
	if r := a.RegistrationID; r != nil {
		if r.Name == "" && r.Subject != nil {
			return r.Subject["CN"]
		}
		return r.Name
	}
	c := credentialOf(p)
	if c.kind != "x509" || s.opts.CertPEM == nil {
		return ""
	}
	b, err := s.opts.CertPEM(ctx, c.certID)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return cert.Subject.CommonName
}

// dpsInfo is I4's DPS answer, in aziot's field order.
type dpsInfo struct {
	Source         string          `json:"source"`
	Auth           string          `json:"auth"`
	Endpoint       string          `json:"endpoint"`
	ScopeID        string          `json:"scope_id"`
	RegistrationID string          `json:"registration_id"`
	Payload        json.RawMessage `json:"payload"`
}

// listModules is I5: the hub's modules of the device, without auth; the
// backups when the hub is unreachable.
func (s *Server) listModules(w http.ResponseWriter, r *http.Request) {
	// As in aziot, the operation is authorized before the type is checked.
	if err := s.authorize(r, "list", "identity:module:*"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if _, err := typeParam(r, "aziot"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	ids, err := s.listIdentities(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"identities": ids})
}

func (s *Server) listIdentities(ctx context.Context) ([]*Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dev, err := s.deviceLocked()
	if err != nil {
		return nil, err
	}
	mods, err := s.hubList(ctx, dev)
	if IsNetwork(err) && s.state != nil {
		mods, err = s.state.Modules(dev)
	}
	if err != nil {
		return nil, err
	}
	out := make([]*Identity, 0, len(mods))
	for _, m := range mods {
		id, _ := s.moduleIdentity(ctx, dev, m, false)
		out = append(out, id)
	}
	return out, nil
}

// createModule is I6 (type aziot; local identities are not built yet).
func (s *Server) createModule(w http.ResponseWriter, r *http.Request) {
	var b typeBody
	if err := requireType(w, r, &b); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if b.ModuleID == nil {
		api.WriteError(w, r, s.log, &api.Error{Status: http.StatusUnprocessableEntity, Message: "missing field `moduleId`"})
		return
	}
	if err := s.authorize(r, "create", "identity:module:"+*b.ModuleID); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	switch *b.Type {
	case "aziot":
	case "local":
		var opts struct {
			Type       string `json:"type"`
			Attributes string `json:"attributes"`
		}
		if len(b.LocalIDOpts) > 0 && string(b.LocalIDOpts) != "null" {
			if err := json.Unmarshal(b.LocalIDOpts, &opts); err != nil {
				api.WriteError(w, r, s.log, api.UnprocessableJSON("localIdOpts", err))
				return
			}
		}
		id, err := s.CreateLocal(r.Context(), *b.ModuleID, opts.Attributes == "server")
		if err != nil {
			s.fail(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, id)
		return
	default:
		api.WriteError(w, r, s.log, api.InvalidParameter("type", fmt.Errorf("invalid type: %s", *b.Type)))
		return
	}
	s.writeIdentity(w, r, func() (*Identity, error) {
		return s.withModule(r.Context(), *b.ModuleID, s.createModuleLocked)
	})
}

// getModule is I7.
func (s *Server) getModule(w http.ResponseWriter, r *http.Request) {
	id := api.PathParam(r, "moduleId")
	if err := s.authorize(r, "get", "identity:module:"+id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	t, err := typeParam(r, "aziot", "local")
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if t == "local" {
		id, err := s.GetLocal(r.Context(), id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, id)
		return
	}
	s.writeIdentity(w, r, func() (*Identity, error) { return s.ModuleIdentity(r.Context(), id) })
}

// updateModule is I8: new keys for the module's current generation.
// The body comes first (415, 422), as aziot's framework parses it before
// the route runs; then, as in aziot, the authorization and the type.
func (s *Server) updateModule(w http.ResponseWriter, r *http.Request) {
	var body json.RawMessage
	if err := api.RequireJSON(w, r, &body); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := api.PathParam(r, "moduleId")
	if err := s.authorize(r, "update", "identity:module:"+id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if _, err := typeParam(r, "aziot"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	s.writeIdentity(w, r, func() (*Identity, error) { return s.withModule(r.Context(), id, s.updateModuleLocked) })
}

// deleteModule is I9. The body is not used, but as in aziot's framework a
// JSON one must parse (422) before anything else is looked at.
func (s *Server) deleteModule(w http.ResponseWriter, r *http.Request) {
	var body json.RawMessage
	if err := api.ReadJSON(w, r, &body); err != nil && !errors.Is(err, api.ErrNoBody) {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := api.PathParam(r, "moduleId")
	if err := s.authorize(r, "delete", "identity:module:"+id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if _, err := typeParam(r, "aziot"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	err := checkModuleID(id)
	if err == nil {
		s.mu.Lock()
		var dev *identity.Device
		if dev, err = s.deviceLocked(); err == nil {
			err = s.deleteModuleLocked(r.Context(), dev, id)
		}
		s.mu.Unlock()
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	api.NoContent(w)
}
