// Package identityd serves the aziot Identity Service API on identityd.sock.
package identityd

import (
	"log/slog"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/policy"
)

// Versions are the api-versions identityd accepts (aziot-api.md §6.1).
var Versions = []string{"2020-09-01", "2021-12-01", "2022-08-01"}

// Server holds identityd's dependencies.
type Server struct {
	guard *api.Guard
	log   *slog.Logger
}

// New returns the identity service.
func New(guard *api.Guard, logger *slog.Logger) *Server {
	return &Server{guard: guard, log: logger}
}

// Service returns the identityd.sock API description.
func (s *Server) Service() *api.Service {
	return &api.Service{
		Name:     "identityd",
		Versions: Versions,
		Routes: []api.Route{
			{Pattern: "/trust-bundle", MinVersion: "2020-09-01", Handlers: map[string]http.HandlerFunc{http.MethodGet: s.trustBundle}},
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

// trustBundle is I10: aziot always answers an empty certificate.
func (s *Server) trustBundle(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r, "trust_bundle", "identity:trust-bundle"); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"certificate": ""})
}
