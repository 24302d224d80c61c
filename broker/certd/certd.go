// Package certd serves the aziot Certificates Service API (aziot-api.md §5)
// on certd.sock: certificate issuance from a CSR (C1: explicit issuer,
// self-signed, local CA, or EST through the sandboxed EST module), import
// (C2), read (C3) and delete (C4), over the cert store of package certs and
// the key store of package hsm. Keys never leave the key store: issuers
// sign through its crypto.Signer.
//
// certd also renews certificates on its own (aziot's cert-renewal engine):
// the EST identity certificates, always, and every certificate configured
// with auto_renew (docs/certs.md).
//
// Every route is a policy decision (service "certd", resource
// "cert:<id>"). The default policy reproduces aziot: create, import and
// delete need uid 0 or a principal whose certs glob matches; get is open.
package certd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/certs"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/est/estjob"
)

// Versions are the api-versions certd accepts.
var Versions = []string{"2020-09-01"}

// Operations of the policy input (docs/policy.md).
const (
	OpCreate = "create"
	OpImport = "import"
	OpGet    = "get"
	OpDelete = "delete"
)

// ESTRunner runs one job of the EST module (wasm-modules/est).
type ESTRunner interface {
	RunEST(ctx context.Context, job *estjob.Job) (*estjob.Result, error)
}

// Options tune the certificate service.
type Options struct {
	// Logger receives certd's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// ESTMaxWait bounds the time one EST job may spend waiting out 202
	// answers; default: the EST module's timeout less 15 s (45 s with
	// the host's default 1-minute timeout).
	ESTMaxWait time.Duration
	// OnRenewed, when set, is called after certd renewed a certificate on
	// its own, new key in place, outside the certificate's lock
	// (identityd reprovisions with DPS after a device-id renewal).
	OnRenewed func(ctx context.Context, certID string)
}

// Server is the certificate service.
type Server struct {
	store     *certs.Store
	keys      *hsm.Keys
	handles   *hsm.Handles
	guard     *api.Guard
	log       *slog.Logger
	now       func() time.Time
	maxWait   time.Duration
	onRenewed func(context.Context, string)

	settings atomic.Pointer[settings]
	est      atomic.Pointer[estHolder]
	renewals *certs.Scheduler

	seed  maphash.Seed
	locks [32]sync.Mutex // one issuance or renewal per cert ID at a time
	caMu  sync.Mutex     // creation of an issued local CA
	// bootMu: one EST enrollment at a time while an EST identity is
	// enrolled with its bootstrap certificate (taken after a cert's lock).
	bootMu sync.Mutex
}

type estHolder struct{ r ESTRunner }

// New returns the certificate service for cfg: dynamic certificates under
// <state_dir>/certs, keys in keys, key handles verified by handles, every
// request authorized by guard.
func New(cfg *config.Config, keys *hsm.Keys, handles *hsm.Handles, guard *api.Guard, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st := resolve(cfg)
	store, err := certs.OpenStore(certDir(cfg), st.preloadedCerts, logger)
	if err != nil {
		return nil, err
	}
	s := &Server{store: store, keys: keys, handles: handles, guard: guard, log: logger.With("service", "certd"),
		now: opts.Now, maxWait: opts.ESTMaxWait, onRenewed: opts.OnRenewed, seed: maphash.MakeSeed()}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxWait <= 0 {
		timeout := time.Minute // the module host's default
		if m, ok := cfg.Warden.Modules[ESTModuleName]; ok && m.Timeout.Duration > 0 {
			timeout = m.Timeout.Duration
		}
		s.maxWait = max(timeout-15*time.Second, 0)
	}
	s.renewals = certs.NewScheduler(s.now)
	s.settings.Store(st)
	s.logProblems(st)
	return s, nil
}

// certDir is where dynamic certificates live: <state_dir>/certs.
func certDir(cfg *config.Config) string { return cfg.Warden.StateDir + "/certs" }

func (s *Server) logProblems(st *settings) {
	for _, p := range st.problems {
		s.log.Warn("certificate settings: reference ignored", "problem", p)
	}
}

// SetEST plugs in the EST module runner (the broker's module host). Until
// it is set, EST issuance fails with a 500.
func (s *Server) SetEST(r ESTRunner) { s.est.Store(&estHolder{r: r}) }

// Store returns the certificate store.
func (s *Server) Store() *certs.Store { return s.store }

// Reload applies a new configuration: cert_issuance and preloaded_certs
// (principals are the policy's). The renewal schedule is rebuilt, as
// aziot resets EST renewal on reload. Preloaded keys named by URI need a
// restart (the key store is opened once).
func (s *Server) Reload(cfg *config.Config) {
	st := resolve(cfg)
	s.store.SetPreloaded(st.preloadedCerts)
	s.settings.Store(st)
	s.logProblems(st)
	for _, id := range s.renewals.IDs() {
		s.renewals.Remove(id)
	}
	s.scheduleAll()
}

// lock serialises issuance and renewal of cert id.
func (s *Server) lock(id string) func() {
	m := &s.locks[maphash.String(s.seed, id)%uint64(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// Service returns the certd.sock API description: routes C1–C4.
func (s *Server) Service() *api.Service {
	return &api.Service{
		Name:     "certd",
		Versions: Versions,
		Routes: []api.Route{
			{Pattern: "/certificates", MinVersion: Versions[0],
				Handlers: map[string]http.HandlerFunc{http.MethodPost: s.create}},
			{Pattern: "/certificates/{certId}", MinVersion: Versions[0],
				Handlers: map[string]http.HandlerFunc{http.MethodGet: s.get, http.MethodPut: s.importCert, http.MethodDelete: s.deleteCert}},
		},
		Middleware: []func(http.Handler) http.Handler{s.guard.Authenticate},
		Logger:     s.log,
	}
}

// authorize decides op on cert id for the request; a refusal is aziot's
// 401. A decision that could not be made fails closed (500).
func (s *Server) authorize(r *http.Request, op, id string) error {
	d, err := s.guard.Authorize(r.Context(), policy.Action{
		Service: "certd", Operation: op, Resource: "cert:" + id, APIVersion: api.APIVersion(r),
	})
	if err != nil {
		return api.Internal(err)
	}
	if d.Allow {
		return nil
	}
	uid := "unknown"
	if p, ok := api.PeerFromContext(r.Context()); ok {
		uid = strconv.FormatUint(uint64(p.UID), 10)
	}
	s.log.Info("certd request refused", "uid", uid, "op", op, "cert", id, "reasons", d.Reasons)
	verb := "modify"
	if op == OpGet {
		verb = "read"
	}
	return api.Unauthorized("user " + uid + " is not authorized to " + verb + " the cert " + id)
}

// errNotFound is aziot's cause for a missing certificate.
var errNotFound = errors.New("not found")

// storeError maps a cert store failure: a missing certificate is 400
// `parameter "<param>" has an invalid value\ncaused by: not found`, an
// invalid ID or a write to a bundle is 400, anything else 500.
func storeError(param string, err error) error {
	switch {
	case errors.Is(err, certs.ErrNotFound):
		return api.InvalidParameter(param, errNotFound)
	case errors.Is(err, certs.ErrInvalidID), errors.Is(err, certs.ErrBundle):
		return api.InvalidParameter(param, errors.Unwrap(err))
	}
	return api.Internal(err)
}

// pemBody is the body of C1–C3 answers.
type pemBody struct {
	PEM string `json:"pem"`
}

// C1: POST /certificates — issue and store.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decode(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := req.CertID.Value
	if err := s.authorize(r, OpCreate, id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var issuer *issuerRef
	if req.Issuer.state == present {
		issuer = &issuerRef{certID: req.Issuer.certID.Value, keyHandle: req.Issuer.privateKeyHandle.Value}
	}
	chain, err := s.Issue(r.Context(), id, []byte(req.CSR.Value), issuer)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, pemBody{PEM: string(chain)})
}

// C2: PUT /certificates/{certId} — import (no validation, bytes as given).
func (s *Server) importCert(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if err := decode(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := api.PathParam(r, "certId")
	if err := s.authorize(r, OpImport, id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	unlock := s.lock(id)
	err := s.store.Put(id, []byte(req.PEM.Value))
	unlock()
	if err != nil {
		api.WriteError(w, r, s.log, storeError("id", err))
		return
	}
	s.log.Info("certificate imported", "cert", id)
	s.scheduleOne(id)
	api.WriteJSON(w, http.StatusCreated, pemBody{PEM: req.PEM.Value})
}

// C3: GET /certificates/{certId} — open to every caller by default.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	id := api.PathParam(r, "certId")
	if err := s.authorize(r, OpGet, id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	b, err := s.store.Get(id)
	if err != nil {
		api.WriteError(w, r, s.log, storeError("id", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, pemBody{PEM: string(b)})
}

// C4: DELETE /certificates/{certId} — a missing cert is success. The body
// is not used, but as in aziot's framework a JSON one must parse (422).
func (s *Server) deleteCert(w http.ResponseWriter, r *http.Request) {
	var ignored json.RawMessage
	if err := api.ReadJSON(w, r, &ignored); err != nil && !errors.Is(err, api.ErrNoBody) {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := api.PathParam(r, "certId")
	if err := s.authorize(r, OpDelete, id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	unlock := s.lock(id)
	err := s.store.Delete(id)
	unlock()
	if err != nil {
		api.WriteError(w, r, s.log, storeError("id", err))
		return
	}
	s.renewals.Remove(id)
	s.log.Info("certificate deleted", "cert", id)
	api.NoContent(w)
}

// ModuleCerts returns the cert store as the module host needs it
// (host.CertStore): certs.get and certs.put of modules.
func (s *Server) ModuleCerts() *ModuleCerts { return &ModuleCerts{s: s} }

// ModuleCerts adapts the certificate store to the module host.
type ModuleCerts struct{ s *Server }

// Get returns certificate id's PEM; a missing one wraps fs.ErrNotExist.
func (m *ModuleCerts) Get(_ context.Context, id string) ([]byte, error) {
	return m.s.store.Get(id)
}

// Put writes certificate id.
func (m *ModuleCerts) Put(_ context.Context, id string, pem []byte) error {
	if err := m.s.store.Put(id, pem); err != nil {
		return fmt.Errorf("certd: module write: %w", err)
	}
	m.s.log.Info("certificate written by a module", "cert", id)
	return nil
}
