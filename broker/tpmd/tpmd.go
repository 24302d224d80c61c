// Package tpmd serves the aziot TPM Service API (aziot-api.md §7) on
// tpmd.sock over package tpm: T1 GET /get_tpm_keys (the EK's and SRK's
// TPM2B_PUBLIC), T2 POST /import_auth_key (the DPS activation blob) and T3
// POST /sign_with_auth_key (TPM2_HMAC with the imported key).
//
// As in aziot, a TPM failure is 500 {"message":"internal error"} and
// nothing more; the log gets the cause, with the TPM command and its
// response code decoded (TPM_RC name and meaning) and, for problems an
// operator can fix, what to do. Every route is also a policy decision
// (service "tpmd"; "keys" on tpm:keys, "import" and "sign" on tpm:authkey),
// open by default as aziot relies on the socket's permissions alone.
package tpmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/tpm"
)

// Versions are the api-versions tpmd accepts.
var Versions = []string{"2020-09-01"}

// Policy operations and resources of tpmd (docs/policy.md).
const (
	OpKeys          = "keys"
	OpImport        = "import"
	OpSign          = "sign"
	ResourceKeys    = "tpm:keys"
	ResourceAuthKey = "tpm:authkey"
)

// TPM is what tpmd needs of the TPM; *tpm.TPM implements it.
type TPM interface {
	Keys(ctx context.Context) (ek, srk []byte, err error)
	ImportAuthKey(ctx context.Context, blob []byte) error
	SignWithAuthKey(ctx context.Context, data []byte) ([]byte, error)
}

// Server holds tpmd's dependencies.
type Server struct {
	tpm   TPM
	guard *api.Guard
	log   *slog.Logger
}

// New returns the TPM service for the [tpm] configuration over a TPM of
// its own (OpenTPM). A broker with other users of the TPM (the WASM host's
// tpm.* calls) should open one with OpenTPM and give it to NewWithTPM and
// to them: a single-client TPM (swtpm, /dev/tpm0) serves one connection at
// a time.
func New(cfg config.TPM, guard *api.Guard, logger *slog.Logger) *Server {
	return NewWithTPM(OpenTPM(cfg, logger), guard, logger)
}

// OpenTPM returns the TPM of the [tpm] configuration. It does not touch the
// TPM: the first operation connects, so wardend starts on machines without
// one. An invalid tcti is logged now and fails every operation.
func OpenTPM(cfg config.TPM, logger *slog.Logger) *tpm.TPM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := tpm.New(tpm.Options{
		TCTI:            cfg.TCTI,
		AuthKeyHandle:   cfg.AuthKeyHandle(),
		EndorsementAuth: cfg.HierarchyAuthorization.Endorsement,
		OwnerAuth:       cfg.HierarchyAuthorization.Owner,
		Logger:          logger,
	})
	if _, err := t.TCTI(); err != nil {
		logger.Error("tpm: [tpm] tcti is invalid; every TPM operation will fail until it is fixed", "err", err)
	}
	return t
}

// TPM returns the TPM the service uses.
func (s *Server) TPM() TPM { return s.tpm }

// NewWithTPM returns the TPM service over t.
func NewWithTPM(t TPM, guard *api.Guard, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{tpm: t, guard: guard, log: logger}
}

// Service returns the tpmd.sock API description: routes T1–T3.
func (s *Server) Service() *api.Service {
	route := func(pattern, method string, h http.HandlerFunc) api.Route {
		return api.Route{Pattern: pattern, MinVersion: Versions[0], Handlers: map[string]http.HandlerFunc{method: h}}
	}
	return &api.Service{
		Name:     "tpmd",
		Versions: Versions,
		Routes: []api.Route{
			route("/get_tpm_keys", http.MethodGet, s.getTPMKeys),
			route("/import_auth_key", http.MethodPost, s.importAuthKey),
			route("/sign_with_auth_key", http.MethodPost, s.signWithAuthKey),
		},
		Middleware: []func(http.Handler) http.Handler{s.guard.Authenticate},
		Logger:     s.log,
	}
}

// authorize decides op on resource; a refusal is Warden's 401
// "authorization error" (aziot has none: its tpmd is open to the socket's
// group). A decision that cannot be made fails closed (500).
func (s *Server) authorize(r *http.Request, op, resource string) error {
	d, err := s.guard.Authorize(r.Context(), policy.Action{
		Service: "tpmd", Operation: op, Resource: resource, APIVersion: api.APIVersion(r)})
	if err != nil {
		return api.Internal(err)
	}
	if !d.Allow {
		return api.Unauthorized("authorization error")
	}
	return nil
}

// keysResponse is T1's body (snake_case, as aziot).
type keysResponse struct {
	EndorsementKey []byte `json:"endorsement_key"`
	StorageRootKey []byte `json:"storage_root_key"`
}

// getTPMKeys is T1.
func (s *Server) getTPMKeys(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, OpKeys, ResourceKeys); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	ek, srk, err := s.tpm.Keys(r.Context())
	if err != nil {
		s.fail(w, r, "could not get TPM keys", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, keysResponse{EndorsementKey: ek, StorageRootKey: srk})
}

// importRequest is T2's body: the activation blob.
type importRequest struct {
	Key []byte `json:"key"`
}

// importAuthKey is T2.
func (s *Server) importAuthKey(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, OpImport, ResourceAuthKey); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var req importRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if req.Key == nil {
		api.WriteError(w, r, s.log, missingField("key"))
		return
	}
	if err := s.tpm.ImportAuthKey(r.Context(), req.Key); err != nil {
		s.fail(w, r, "could not import auth key", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// signRequest is T3's body.
type signRequest struct {
	Data []byte `json:"data"`
}

// signResponse is T3's answer.
type signResponse struct {
	Digest []byte `json:"digest"`
}

// signWithAuthKey is T3.
func (s *Server) signWithAuthKey(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, OpSign, ResourceAuthKey); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var req signRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if req.Data == nil {
		api.WriteError(w, r, s.log, missingField("data"))
		return
	}
	mac, err := s.tpm.SignWithAuthKey(r.Context(), req.Data)
	if err != nil {
		s.fail(w, r, "could not sign with auth key", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, signResponse{Digest: mac})
}

// missingField is the 422 serde gives aziot for a body without a field.
func missingField(name string) *api.Error {
	return &api.Error{Status: http.StatusUnprocessableEntity, Message: "missing field `" + name + "`"}
}

// problems are the TPM errors an operator can fix, with the tag the log
// gives them; checkable ones are also diagnosed by `wardenctl check tpm`.
var problems = []struct {
	err       error
	tag       string
	checkable bool
}{
	{tpm.ErrNoTPM, "no_tpm", true},
	{tpm.ErrHierarchyAuth, "hierarchy_auth", true},
	{tpm.ErrHandleOccupied, "handle_occupied", true},
	{tpm.ErrNoAuthKey, "no_auth_key", true},
	{tpm.ErrBadBlob, "bad_blob", false},
}

// fail logs a TPM failure with its decoded cause and answers aziot's 500.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	attrs := []any{"path", r.URL.Path, "err", err}
	if ce, ok := tpm.Decode(err); ok {
		attrs = append(attrs, "tpm_command", ce.Command, "tpm_rc", fmt.Sprintf("%#x", uint32(ce.RC)),
			"tpm_rc_name", ce.Name(), "tpm_rc_meaning", ce.Meaning())
	}
	for _, p := range problems {
		if errors.Is(err, p.err) {
			attrs = append(attrs, "problem", p.tag)
			if p.checkable {
				attrs = append(attrs, "check", "wardenctl check tpm")
			}
			break
		}
	}
	if p, ok := api.PeerFromContext(r.Context()); ok {
		attrs = append(attrs, "uid", p.UID, "pid", p.PID)
	}
	s.log.Error("tpmd: "+what, attrs...)
	api.WriteError(w, r, nil, api.Internal(err))
}
