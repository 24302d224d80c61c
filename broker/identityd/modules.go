package identityd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

// hubTimeout bounds one registry job.
const hubTimeout = 2 * time.Minute

// hub runs one registry operation for device dev.
func (s *Server) hub(ctx context.Context, dev *identity.Device, op, moduleID string, keys ...string) (*hubjob.Result, error) {
	cfg := s.cfg
	cred := credentialOf(cfg.Provisioning)
	job := hubjob.Job{Op: op, URL: "https://" + dev.GatewayHost, DeviceID: dev.DeviceID, ModuleID: moduleID,
		TLS: s.tlsOptions(cfg, cred), Retries: cfg.CloudRetries, RetryDelayMS: s.opts.RetryDelayMS}
	if len(keys) == 2 {
		job.PrimaryKey, job.SecondaryKey = keys[0], keys[1]
	}
	switch cred.kind {
	case "tpm":
		job.TPM, job.HubName = true, dev.HubName
	case "sas":
		// The module mints a fresh 30 s token per request with the device key.
		job.KeyID, job.HubName = cred.keyID, dev.HubName
	}
	var res hubjob.Result
	if err := s.runJob(ctx, "Hub", HubModule, &job, &res, hubTimeout); err != nil {
		return nil, err
	}
	return &res, nil
}

func parseModule(b json.RawMessage) (*identity.Module, error) {
	var m identity.Module
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &CloudError{Client: "Hub", Err: fmt.Errorf("module: %w", err)}
	}
	return &m, nil
}

func (s *Server) hubModule(ctx context.Context, dev *identity.Device, op, id string, keys ...string) (*identity.Module, error) {
	res, err := s.hub(ctx, dev, op, id, keys...)
	if err != nil {
		return nil, err
	}
	return parseModule(res.Module)
}

func (s *Server) hubList(ctx context.Context, dev *identity.Device) ([]*identity.Module, error) {
	res, err := s.hub(ctx, dev, hubjob.OpList, "")
	if err != nil {
		return nil, err
	}
	out := make([]*identity.Module, 0, len(res.Modules))
	for _, b := range res.Modules {
		m, err := parseModule(b)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// masterHandle creates the master key if missing and returns its handle.
func (s *Server) masterHandle(ctx context.Context) (string, error) {
	if err := s.opts.Keys.CreateKey(ctx, MasterKeyID, hsm.UsageDerive|hsm.UsageSign); err != nil {
		return "", &CloudError{Client: "Key", Err: wrapf(err, "create the master key")}
	}
	h, err := s.opts.Handles.Issue(ctx, hsm.KeyRef{Kind: hsm.KindKey, ID: MasterKeyID})
	if err != nil {
		return "", &CloudError{Client: "Key", Err: wrapf(err, "master key handle")}
	}
	return h, nil
}

// ModuleKeyHandle is the derived handle of module id's primary SAS key for
// generation gen: HMAC-SHA256(master, "id:gen:primary") computed in the
// key store whenever the handle is used (§6.5).
func (s *Server) ModuleKeyHandle(ctx context.Context, id, gen string) (string, error) {
	base, err := s.masterHandle(ctx)
	if err != nil {
		return "", err
	}
	h, err := s.opts.Handles.Issue(ctx, hsm.KeyRef{Kind: hsm.KindDerived, Base: base, Data: identity.ModuleKeyData(id, gen, true)})
	if err != nil {
		return "", &CloudError{Client: "Key", Err: wrapf(err, "derived key handle")}
	}
	return h, nil
}

// moduleKeys derives the primary and secondary keys (base64) written to the hub.
func (s *Server) moduleKeys(ctx context.Context, id, gen string) (string, string, error) {
	if _, err := s.masterHandle(ctx); err != nil {
		return "", "", err
	}
	var out [2]string
	for i, primary := range []bool{true, false} {
		k, err := s.opts.Keys.DeriveKey(ctx, MasterKeyID, identity.ModuleKeyData(id, gen, primary))
		if err != nil {
			return "", "", &CloudError{Client: "Key", Err: wrapf(err, "derive module key")}
		}
		out[i] = base64.StdEncoding.EncodeToString(k)
	}
	return out[0], out[1], nil
}

// setKeys derives m's keys and writes them to the hub, then backs m up.
func (s *Server) setKeys(ctx context.Context, dev *identity.Device, m *identity.Module) (*identity.Module, error) {
	if m.GenerationID == "" {
		return nil, ErrModuleNotFound
	}
	p, sec, err := s.moduleKeys(ctx, m.ModuleID, m.GenerationID)
	if err != nil {
		return nil, err
	}
	upd, err := s.hubModule(ctx, dev, hubjob.OpSetKeys, m.ModuleID, p, sec)
	if err != nil {
		return nil, err
	}
	if upd.GenerationID == "" {
		upd.GenerationID = m.GenerationID
	}
	if s.state != nil {
		if err := s.state.PutModule(dev, upd); err != nil {
			return nil, err
		}
	}
	return upd, nil
}

// createModuleLocked is the create flow: create, derive, set keys, back up.
func (s *Server) createModuleLocked(ctx context.Context, dev *identity.Device, id string) (*identity.Module, error) {
	m, err := s.hubModule(ctx, dev, hubjob.OpCreate, id)
	if err != nil {
		return nil, err
	}
	s.log.Info("identity: module created on the hub", "module", id, "generation_id", m.GenerationID)
	return s.setKeys(ctx, dev, m)
}

// updateModuleLocked is I8: get, derive, set keys with If-Match: *.
func (s *Server) updateModuleLocked(ctx context.Context, dev *identity.Device, id string) (*identity.Module, error) {
	m, err := s.hubModule(ctx, dev, hubjob.OpGet, id)
	if err != nil {
		return nil, err
	}
	return s.setKeys(ctx, dev, m)
}

// getModuleLocked is I7: from the hub, falling back to the backup on a
// network error (backup first with prefer_module_identity_cache); a hub 404
// deletes the backup.
func (s *Server) getModuleLocked(ctx context.Context, dev *identity.Device, id string) (*identity.Module, error) {
	if s.cfg.PreferModuleIdentityCache && s.state != nil {
		if m, err := s.state.GetModule(dev, id); err == nil {
			return m, nil
		}
	}
	m, err := s.hubModule(ctx, dev, hubjob.OpGet, id)
	var ce *CloudError
	switch {
	case err == nil:
		if s.state != nil {
			if err := s.state.PutModule(dev, m); err != nil {
				s.log.Warn("identity: module backup", "module", id, "err", err)
			}
		}
		return m, nil
	case errors.As(err, &ce) && ce.NotFound && s.state != nil:
		_ = s.state.DeleteModule(dev, id)
	case IsNetwork(err) && s.state != nil:
		if b, berr := s.state.GetModule(dev, id); berr == nil {
			s.log.Info("identity: the hub is unreachable; module from its backup", "module", id)
			return b, nil
		} else if errors.Is(berr, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// deleteModuleLocked deletes module id on the hub and its backup.
func (s *Server) deleteModuleLocked(ctx context.Context, dev *identity.Device, id string) error {
	if _, err := s.hub(ctx, dev, hubjob.OpDelete, id); err != nil {
		return err
	}
	if s.state != nil {
		return s.state.DeleteModule(dev, id)
	}
	return nil
}

// desiredModules are the names of principals with idtype module.
func (s *Server) desiredModules() []string {
	var out []string
	for _, p := range s.cfg.Principals {
		if p.Name != "" && p.HasIDType("module") && !slices.Contains(out, p.Name) {
			out = append(out, p.Name)
		}
	}
	return out
}

// reconcileLocked makes the hub's modules match the principals (§8.5):
// for each hub module, not desired but previously managed → delete;
// desired and previously managed → keep; desired but not previously managed
// → delete and recreate (new generation, new keys). Remaining desired
// modules are created. Modules never managed here are untouched.
func (s *Server) reconcileLocked(ctx context.Context) error {
	dev := s.device
	if dev == nil {
		return nil
	}
	desired := s.desiredModules()
	var prev []string
	if s.state != nil {
		ps, err := s.state.PrevState()
		if err != nil {
			s.log.Warn("identity: prev_state unusable; treating no module as managed", "err", err)
		} else if ps != nil && ps.HubName == dev.HubName && ps.DeviceID == dev.DeviceID {
			prev = ps.Modules
		}
	}
	mods, err := s.hubList(ctx, dev)
	if err != nil {
		return err
	}
	done := map[string]bool{}
	for _, m := range mods {
		id := m.ModuleID
		want, had := slices.Contains(desired, id), slices.Contains(prev, id)
		switch {
		case !want && had:
			s.log.Info("identity: deleting a module no principal wants", "module", id)
			if err := s.deleteModuleLocked(ctx, dev, id); err != nil {
				return err
			}
		case want && had:
			done[id] = true
			if s.state != nil {
				if _, err := s.state.GetModule(dev, id); err != nil {
					if _, err := s.setKeys(ctx, dev, m); err != nil {
						return err
					}
				}
			}
		case want:
			s.log.Info("identity: recreating a module this service did not create", "module", id)
			if err := s.deleteModuleLocked(ctx, dev, id); err != nil {
				return err
			}
		}
	}
	for _, id := range desired {
		if done[id] {
			continue
		}
		if _, err := s.createModuleLocked(ctx, dev, id); err != nil {
			return err
		}
	}
	if s.state != nil {
		if err := s.state.SetDevice(dev); err != nil {
			return err
		}
		if err := s.state.SetPrevState(&identity.PrevState{HubName: dev.HubName, DeviceID: dev.DeviceID, Modules: desired}); err != nil {
			return err
		}
	}
	s.log.Info("identity: module identities reconciled", "modules", desired)
	return nil
}
