// Package control serves Warden's own API on broker.sock: capability tokens
// (mint, attenuate, revoke, introspect, jwks) and health.
package control

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/policy"
)

// APIVersion is the api-version of broker.sock.
const APIVersion = "2026-12-01"

// Authority is what the token routes need of capabilities.Authority.
type Authority interface {
	Mint(ctx context.Context, sub string, uid uint32, caps []capabilities.Capability, ttl time.Duration) (string, *capabilities.Claims, error)
	Attenuate(ctx context.Context, parent string, callerUID uint32, caps []capabilities.Capability, ttl time.Duration, toUID uint32) (string, *capabilities.Claims, error)
	Verify(ctx context.Context, token string, uid uint32) (*capabilities.Claims, error)
	Inspect(ctx context.Context, token string) (*capabilities.Claims, error)
	Active(c *capabilities.Claims) error
	Revoke(ctx context.Context, id string, exp time.Time) error
	RevokeToken(ctx context.Context, c *capabilities.Claims) error
	JWKS() ([]byte, error)
}

// Server holds the dependencies of the broker.sock routes.
type Server struct {
	tokens   Authority
	guard    *api.Guard
	log      *slog.Logger
	revision func() string
}

// New returns the control API. revision reports the policy revision for /health.
func New(tokens Authority, guard *api.Guard, logger *slog.Logger, revision func() string) *Server {
	return &Server{tokens: tokens, guard: guard, log: logger, revision: revision}
}

// Service returns the broker.sock API description.
func (s *Server) Service() *api.Service {
	route := func(pattern, method string, h http.HandlerFunc) api.Route {
		return api.Route{Pattern: pattern, MinVersion: APIVersion, Handlers: map[string]http.HandlerFunc{method: h}}
	}
	return &api.Service{
		Name:     "broker",
		Versions: []string{APIVersion},
		Routes: []api.Route{
			route("/tokens", http.MethodPost, s.mint),
			route("/tokens/attenuate", http.MethodPost, s.attenuate),
			route("/tokens/revoke", http.MethodPost, s.revoke),
			route("/tokens/introspect", http.MethodPost, s.introspect),
			route("/jwks", http.MethodGet, s.jwks),
			route("/health", http.MethodGet, s.health),
		},
		Middleware: []func(http.Handler) http.Handler{s.guard.Authenticate},
		Logger:     s.log,
	}
}

// authorize asks the guard and turns a refusal into aziot's 401 shape.
func (s *Server) authorize(r *http.Request, a policy.Action) error {
	a.APIVersion = api.APIVersion(r)
	d, err := s.guard.Authorize(r.Context(), a)
	if err != nil {
		return api.Internal(err)
	}
	if !d.Allow {
		return &api.Error{Status: http.StatusUnauthorized, Message: "authorization error", Err: reasons(d.Reasons), Chain: true}
	}
	return nil
}

type reasons []string

func (r reasons) Error() string {
	if len(r) == 0 {
		return "denied by policy"
	}
	return r[0]
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, policy.Action{Service: "admin", Operation: "health", Resource: "broker"}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "policyRevision": s.revision()})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, policy.Action{Service: "tokens", Operation: "jwks", Resource: "tokens"}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	b, err := s.tokens.JWKS()
	if err != nil {
		api.WriteError(w, r, s.log, api.Internal(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// tokenError maps a capabilities error about a presented token to a 401, and
// a request error to a 400 on param (on ttlSeconds for a lifetime error).
func tokenError(param string, err error) error {
	switch {
	case errors.Is(err, capabilities.ErrTooManyRevocations):
		return &api.Error{Status: http.StatusTooManyRequests, Message: err.Error()}
	case errors.Is(err, capabilities.ErrTTL):
		return api.InvalidParameter("ttlSeconds", err)
	case errors.Is(err, capabilities.ErrInvalidRequest), errors.Is(err, capabilities.ErrWiden):
		return api.InvalidParameter(param, err)
	case errors.Is(err, capabilities.ErrInvalid), errors.Is(err, capabilities.ErrExpired),
		errors.Is(err, capabilities.ErrNotYetValid), errors.Is(err, capabilities.ErrRevoked), errors.Is(err, capabilities.ErrWrongUID):
		return api.TokenError(err)
	}
	return api.Internal(err)
}
