// Package identityd serves the aziot Identity Service API on identityd.sock
// (aziot-api.md §6): the device identity and IoT Hub module identities of
// host processes, provisioned manually or through DPS (§8). The cloud
// protocols run as WASM modules — "dps" (wasm-modules/dps) and "hub"
// (wasm-modules/hub) — through the broker's module host; the device key and
// the module master key never leave the key store (SAS tokens are signed in
// hsm, module keys are derived there and callers get derived handles). The
// provisioning state lives under <state_dir>/identity (package identity).
package identityd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// Versions are the api-versions identityd accepts (aziot-api.md §6.1).
var Versions = []string{"2020-09-01", "2021-12-01", "2022-08-01"}

// Well-known names.
const (
	// MasterKeyID is the symmetric key module SAS keys are derived from (§6.5).
	MasterKeyID = "aziot_identityd_master_id"
	// DeviceKeyID is the device's SAS key (manual sas, DPS symmetric key).
	DeviceKeyID = "device-id"
	// GroupKeyID, when [preloaded_keys] names it, switches DPS symmetric-key
	// attestation to group enrollment: the device key is derived inside the
	// key store as HMAC-SHA256(group key, registration_id) and stored as
	// DeviceKeyID (attestation.symmetric_key is then not used).
	GroupKeyID = "dps-group-key"
	// CloudTrustCertID, when [preloaded_certs] names it, is a trust anchor
	// for DPS and IoT Hub besides the system's (a test CA, a private cloud).
	CloudTrustCertID = "cloud-trust"
	// DPSModule and HubModule are the module names jobs run in.
	DPSModule = "dps"
	HubModule = "hub"
)

// Runner runs module jobs: the broker's module host.
type Runner interface {
	Run(ctx context.Context, name string, input []byte) (*host.Result, error)
}

// Options are identityd's dependencies.
type Options struct {
	// Keys is the key store; Handles issues key handles.
	Keys    *hsm.Keys
	Handles *hsm.Handles
	// Modules runs the dps and hub jobs.
	Modules Runner
	// StateDir is identityd's directory (<state_dir>/identity).
	StateDir string
	Logger   *slog.Logger
	// Issue issues local identities' certificates (certd); nil refuses them.
	Issue Issuer
	// CertPEM reads a stored certificate (certd), for I4's registration ID
	// of X.509 attestation without one configured; nil leaves it empty.
	CertPEM func(ctx context.Context, id string) ([]byte, error)
	// PollMS and ThrottleMS go to DPS jobs (tests set them small); zero
	// values keep aziot's timings.
	PollMS     int
	ThrottleMS []int
	// RetryDelayMS is the wait before a transport retry (cloud_retries);
	// 0 keeps aziot's 3 s.
	RetryDelayMS int
}

// Server is the identity service.
type Server struct {
	guard *api.Guard
	log   *slog.Logger
	opts  Options
	state *identity.State

	mu     sync.Mutex // serializes provisioning and reconciliation
	cfg    *config.Config
	device *identity.Device // nil until provisioned
	// payload is the DPS custom allocation payload of the last registration.
	payload json.RawMessage
}

// New returns the identity service. Call Start to provision.
func New(guard *api.Guard, cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{guard: guard, log: opts.Logger, opts: opts, cfg: cfg}
	if opts.StateDir != "" {
		st, err := identity.OpenState(opts.StateDir)
		if err != nil {
			return nil, err
		}
		s.state = st
	}
	return s, nil
}

// Service returns the identityd.sock API description.
func (s *Server) Service() *api.Service {
	r := func(p, minV string, h map[string]http.HandlerFunc) api.Route {
		return api.Route{Pattern: p, MinVersion: minV, Handlers: h}
	}
	const v1, v2 = "2020-09-01", "2021-12-01"
	return &api.Service{
		Name:     "identityd",
		Versions: Versions,
		Routes: []api.Route{
			r("/identities/identity", v1, map[string]http.HandlerFunc{http.MethodGet: s.getIdentity}),
			r("/identities/device", v1, map[string]http.HandlerFunc{http.MethodPost: s.getDevice}),
			r("/identities/device/reprovision", v1, map[string]http.HandlerFunc{http.MethodPost: s.reprovision}),
			r("/identities/provisioning", v2, map[string]http.HandlerFunc{http.MethodGet: s.provisioning}),
			r("/identities/modules", v1, map[string]http.HandlerFunc{http.MethodGet: s.listModules, http.MethodPost: s.createModule}),
			r("/identities/modules/{moduleId}", v1, map[string]http.HandlerFunc{
				http.MethodGet: s.getModule, http.MethodPut: s.updateModule, http.MethodDelete: s.deleteModule}),
			r("/trust-bundle", v1, map[string]http.HandlerFunc{http.MethodGet: s.trustBundle}),
		},
		Middleware: []func(http.Handler) http.Handler{s.guard.Authenticate},
		Logger:     s.log,
	}
}

// authorize maps a refusal to identityd's 401 "authorization error".
func (s *Server) authorize(r *http.Request, op, resource string) error {
	d, err := s.guard.Authorize(r.Context(), policy.Action{
		Service: "identityd", Operation: op, Resource: resource, APIVersion: api.APIVersion(r)})
	if err != nil {
		return api.Internal(err)
	}
	if !d.Allow {
		return api.Unauthorized("authorization error")
	}
	return nil
}

// Errors of the identity service, mapped to aziot's statuses (§6.4).
var (
	// ErrDeviceNotFound: not provisioned, or provisioning "none".
	ErrDeviceNotFound = errors.New("device identity not found")
	// ErrModuleNotFound: the module has no generation ID (or no backup).
	ErrModuleNotFound = errors.New("module identity not found")
)

// CloudError is a failure of DPS, the hub or the key store.
type CloudError struct {
	// Client is "DPS", "Hub" or "Key".
	Client string
	// Network is set when the peer could not be reached (or answered 5xx):
	// backups may be used.
	Network bool
	// NotFound is a hub 404.
	NotFound bool
	Err      error
}

// Error renders aziot's message and the cause.
func (e *CloudError) Error() string { return e.Client + " client error: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *CloudError) Unwrap() error { return e.Err }

// IsNetwork reports whether err is a cloud error of the network kind.
func IsNetwork(err error) bool {
	var ce *CloudError
	return errors.As(err, &ce) && ce.Network
}

// apiError maps a service error to aziot's response.
func apiError(err error) error {
	var ae *api.Error
	var ce *CloudError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, ErrDeviceNotFound):
		return api.BadRequest("device identity not found")
	case errors.Is(err, ErrModuleNotFound):
		return api.BadRequest("module identity not found")
	case errors.As(err, &ce):
		return &api.Error{Status: http.StatusNotFound, Message: ce.Client + " client error", Err: ce.Err, Chain: true}
	}
	return api.Internal(err)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	api.WriteError(w, r, s.log, apiError(err))
}

// trustBundle is I10: aziot always answers an empty certificate.
func (s *Server) trustBundle(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, "trust_bundle", "identity:trust-bundle"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"certificate": ""})
}

// Device returns the current device (nil before provisioning).
func (s *Server) Device() *identity.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.device == nil {
		return nil
	}
	d := *s.device
	return &d
}

func (s *Server) config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// jobTimeout bounds one cloud job from identityd's side.
func (s *Server) jobTimeout(cfg *config.Config) time.Duration {
	return time.Duration(max(cfg.CloudTimeoutSec, 70)) * time.Second * 5
}

// wrapf wraps err with context.
func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}
