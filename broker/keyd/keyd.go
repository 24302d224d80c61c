// Package keyd serves the aziot Keys Service API (aziot-api.md §3) on
// keyd.sock: key and key-pair creation, loading, moving and deletion by ID,
// and signing, encryption, decryption, derivation and public parameters by
// key handle. Keys stay in the hsm store; no response carries private key
// material except K10's export of a derived key, which aziot defines and
// the policy gates (operation "export").
//
// Every route is a policy decision (service "keyd", resource "key:<id>",
// for handle routes the key the handle resolves to, for a derived handle
// its base key). The default policy reproduces aziot: ID routes need uid 0
// or a principal whose keys glob matches, handle routes are open.
package keyd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// Versions are the api-versions keyd accepts. Every route serves both, as
// aziot registers every route for >= 2020-09-01 (aziot-api.md §3).
var Versions = []string{"2020-09-01", "2021-05-01"}

// Operations of the policy input (docs/policy.md): the ID operations and
// the handle operations of keyd.
const (
	OpCreate     = "create"
	OpImport     = "import"
	OpLoad       = "load"
	OpMove       = "move"
	OpDelete     = "delete"
	OpParameters = "parameters"
	OpDerive     = "derive"
	OpExport     = "export"
	OpSign       = "sign"
	OpEncrypt    = "encrypt"
	OpDecrypt    = "decrypt"
)

// Server holds keyd's dependencies.
type Server struct {
	keys      *hsm.Keys
	handles   *hsm.Handles
	guard     *api.Guard
	log       *slog.Logger
	decisions *decisionCache // nil: every request asks the policy
	now       func() time.Time
}

// New returns the key service over keys, issuing and verifying handles
// with handles and authorizing every request with guard.
func New(keys *hsm.Keys, handles *hsm.Handles, guard *api.Guard, logger *slog.Logger, opts Options) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{keys: keys, handles: handles, guard: guard, log: logger, decisions: newDecisionCache(opts), now: time.Now}
}

// Service returns the keyd.sock API description: routes K1–K13.
func (s *Server) Service() *api.Service {
	route := func(pattern string, h map[string]http.HandlerFunc) api.Route {
		return api.Route{Pattern: pattern, MinVersion: Versions[0], Handlers: h}
	}
	return &api.Service{
		Name:     "keyd",
		Versions: Versions,
		Routes: []api.Route{
			route("/key", map[string]http.HandlerFunc{http.MethodPost: s.createKey, http.MethodDelete: s.deleteKey}),
			route("/key/{keyId}", map[string]http.HandlerFunc{http.MethodGet: s.loadKey, http.MethodPost: s.moveKey}),
			route("/keypair", map[string]http.HandlerFunc{http.MethodPost: s.createKeyPair, http.MethodDelete: s.deleteKeyPair}),
			route("/keypair/{keyId}", map[string]http.HandlerFunc{http.MethodGet: s.loadKeyPair, http.MethodPost: s.moveKeyPair}),
			route("/parameters/{parameterName}", map[string]http.HandlerFunc{http.MethodPost: s.parameters}),
			route("/derivedkey", map[string]http.HandlerFunc{http.MethodPost: s.deriveKey}),
			route("/derivedkey/export", map[string]http.HandlerFunc{http.MethodPost: s.exportDerivedKey}),
			route("/sign", map[string]http.HandlerFunc{http.MethodPost: s.sign}),
			route("/encrypt", map[string]http.HandlerFunc{http.MethodPost: s.encrypt}),
			route("/decrypt", map[string]http.HandlerFunc{http.MethodPost: s.decrypt}),
		},
		Middleware: []func(http.Handler) http.Handler{s.guard.Authenticate},
		Logger:     s.log,
	}
}

// The causes of keyd's 400s, worded as aziot's (the body is
// `parameter "<name>" has an invalid value\ncaused by: <cause>`).
var (
	errInvalidHandle   = errors.New("invalid handle")
	errNotKey          = errors.New("handle is not for a key")
	errNotKeyPair      = errors.New("handle is not for a key pair")
	errNotDerived      = errors.New("handle is not for a derived key")
	errNested          = errors.New("nested derived keys are not supported, import the outer derived key first")
	errMechanism       = errors.New("mechanism cannot be used with this key type")
	errMoveIdentical   = api.BadRequest("source and destination for move are identical")
	errInvalidTypeKey  = api.BadRequest(`invalid type "key"`)
	errInvalidArgument = api.InvalidParameter("", nil)
)

// authorize decides op on key keyID on behalf of the request and turns a
// refusal into aziot's 401 naming keyID. A decision that could not be made
// fails closed (500).
func (s *Server) authorize(r *http.Request, op, keyID string, details map[string]any) error {
	_, err := s.decide(r, op, keyID, details)
	return err
}

// decide is authorize, returning the policy revision of an allow.
func (s *Server) decide(r *http.Request, op, keyID string, details map[string]any) (string, error) {
	d, err := s.guard.Authorize(r.Context(), policy.Action{
		Service: "keyd", Operation: op, Resource: "key:" + keyID,
		APIVersion: api.APIVersion(r), Details: details,
	})
	if err != nil {
		return "", api.Internal(err)
	}
	if !d.Allow {
		uid := "unknown"
		if p, ok := api.PeerFromContext(r.Context()); ok {
			uid = strconv.FormatUint(uint64(p.UID), 10)
		}
		s.log.Info("keyd request refused", "uid", uid, "op", op, "key", keyID, "reasons", d.Reasons)
		return "", api.Unauthorized("user " + uid + " is not authorized to access the key " + keyID)
	}
	return d.Revision, nil
}

// authorizeHandle is authorize for a handle operation, whose allow
// decisions may be reused for Options.DecisionTTL. detail is the mechanism
// or parameter name, also given to the policy as details[detailName].
func (s *Server) authorizeHandle(r *http.Request, op, keyID, detailName, detail string) error {
	details := func() map[string]any {
		if detailName == "" {
			return nil
		}
		return map[string]any{detailName: detail}
	}
	if s.decisions == nil {
		return s.authorize(r, op, keyID, details())
	}
	k, ok := s.decisions.key(r, op, keyID, detail)
	now := s.now()
	if ok && s.decisions.allowed(k, now) {
		return nil
	}
	rev, err := s.decide(r, op, keyID, details())
	if err == nil && ok {
		s.decisions.remember(k, rev, now)
	}
	return err
}

// checkID rejects a key ID aziot cannot pass to its C library (a NUL byte),
// with aziot's message for param.
func checkID(param, id string) error {
	if i := strings.IndexByte(id, 0); i >= 0 {
		return api.InvalidParameter(param, fmt.Errorf("nul byte found in provided data at position: %d", i))
	}
	return nil
}

// resolved is a verified handle: its reference and the ID of the key it
// resolves to (the base key of a derived handle).
type resolved struct {
	ref   hsm.KeyRef
	keyID string
}

// resolve verifies handle and refuses nested derived handles.
func (s *Server) resolve(ctx context.Context, handle string) (resolved, error) {
	ref, err := s.handles.Verify(ctx, handle)
	if errors.Is(err, hsm.ErrInvalidHandle) {
		return resolved{}, api.InvalidParameter("handle", errInvalidHandle)
	}
	if err != nil {
		return resolved{}, api.Internal(fmt.Errorf("verify key handle: %w", err))
	}
	if ref.Kind != hsm.KindDerived {
		return resolved{ref: ref, keyID: ref.ID}, nil
	}
	if ref.BaseRef == nil {
		return resolved{}, api.Internal(errors.New("verify key handle: derived handle without its base"))
	}
	if ref.BaseRef.Kind == hsm.KindDerived {
		return resolved{}, api.InvalidParameter("handle", errNested)
	}
	return resolved{ref: ref, keyID: ref.BaseRef.ID}, nil
}

// handleOp resolves a key handle and authorizes op on its key, with
// details {detailName: detail} when detailName is set.
func (s *Server) handleOp(r *http.Request, op, handle, detailName, detail string) (resolved, error) {
	res, err := s.resolve(r.Context(), handle)
	if err != nil {
		return resolved{}, err
	}
	if err := s.authorizeHandle(r, op, res.keyID, detailName, detail); err != nil {
		return resolved{}, err
	}
	return res, nil
}

// storeError maps a key-store failure to aziot's answer: what the library
// calls an invalid parameter (a missing key, a wrong key type, a bad IV or
// ciphertext, no usable algorithm) is 400 `a parameter has an invalid
// value`; anything else (I/O, PKCS#11, a malformed key file) is a 500 whose
// detail is logged, never sent.
func storeError(err error) error {
	switch {
	case errors.Is(err, hsm.ErrNotFound), errors.Is(err, hsm.ErrInvalidParameter), errors.Is(err, hsm.ErrUnsupported):
		return &api.Error{Status: http.StatusBadRequest, Message: errInvalidArgument.Message, Err: err}
	}
	return api.Internal(err)
}

// issue returns a new handle for ref.
func (s *Server) issue(ctx context.Context, ref hsm.KeyRef) (string, error) {
	h, err := s.handles.Issue(ctx, ref)
	switch {
	case errors.Is(err, hsm.ErrHandleTooLong) && ref.Kind == hsm.KindDerived:
		return "", api.InvalidParameter("derivationData", hsm.ErrHandleTooLong)
	case errors.Is(err, hsm.ErrHandleTooLong):
		return "", api.InvalidParameter("id", hsm.ErrHandleTooLong)
	case err != nil:
		return "", api.Internal(fmt.Errorf("issue key handle: %w", err))
	}
	return h, nil
}
