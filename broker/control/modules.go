package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// Modules is what the module routes need of the module host; *host.Host
// implements it.
type Modules interface {
	Modules() []host.ModuleStatus
	Reload(ctx context.Context) error
	Run(ctx context.Context, name string, input []byte) (*host.Result, error)
}

// ModuleRoutes returns the broker.sock routes of the module host (each a
// policy decision, action.service "modules"):
//
//   - GET /modules (list): every configured module's status;
//   - POST /modules/reload (reload): re-read and re-verify every module
//     file; the next job uses a new version, running jobs finish on theirs;
//   - POST /modules/{name}/run (run, resource module:<name>): run one job,
//     the request body as the job's JSON.
func (s *Server) ModuleRoutes(m Modules) []api.Route {
	route := func(pattern, method string, h http.HandlerFunc) api.Route {
		return api.Route{Pattern: pattern, MinVersion: APIVersion, Handlers: map[string]http.HandlerFunc{method: h}}
	}
	return []api.Route{
		route("/modules", http.MethodGet, func(w http.ResponseWriter, r *http.Request) { s.listModules(w, r, m) }),
		route("/modules/reload", http.MethodPost, func(w http.ResponseWriter, r *http.Request) { s.reloadModules(w, r, m) }),
		route("/modules/{name}/run", http.MethodPost, func(w http.ResponseWriter, r *http.Request) { s.runModule(w, r, m) }),
	}
}

// modulesResponse is the body of GET /modules and POST /modules/reload.
type modulesResponse struct {
	Modules []host.ModuleStatus `json:"modules"`
	// Errors lists the modules a reload refused (each also in its status).
	Errors []string `json:"errors,omitempty"`
}

// runResponse is the body of POST /modules/{name}/run: the job's outcome.
type runResponse struct {
	Module     string          `json:"module"`
	Digest     string          `json:"digest,omitempty"`
	OK         bool            `json:"ok"`
	Output     json.RawMessage `json:"output,omitempty"`
	Kind       string          `json:"kind,omitempty"`
	Error      string          `json:"error,omitempty"`
	Code       string          `json:"code,omitempty"`
	DurationMS float64         `json:"durationMs"`
	HostCalls  int             `json:"hostCalls"`
}

func (s *Server) listModules(w http.ResponseWriter, r *http.Request, m Modules) {
	if err := s.authorize(r, policy.Action{Service: "modules", Operation: "list", Resource: "modules"}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, modulesResponse{Modules: m.Modules()})
}

func (s *Server) reloadModules(w http.ResponseWriter, r *http.Request, m Modules) {
	if err := s.authorize(r, policy.Action{Service: "modules", Operation: "reload", Resource: "modules"}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	resp := modulesResponse{}
	if err := m.Reload(r.Context()); err != nil {
		if errors.Is(err, host.ErrClosed) {
			api.WriteError(w, r, s.log, &api.Error{Status: http.StatusServiceUnavailable, Message: "the module host is closed"})
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				resp.Errors = append(resp.Errors, e.Error())
			}
		} else {
			resp.Errors = []string{err.Error()}
		}
	}
	resp.Modules = m.Modules()
	s.log.Info("modules reloaded", "modules", len(resp.Modules), "refused", len(resp.Errors))
	api.WriteJSON(w, http.StatusOK, resp)
}

func (s *Server) runModule(w http.ResponseWriter, r *http.Request, m Modules) {
	name := api.PathParam(r, "name")
	if err := s.authorize(r, policy.Action{Service: "modules", Operation: "run", Resource: "module:" + name}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var job json.RawMessage
	if err := api.ReadJSON(w, r, &job); err != nil && !errors.Is(err, api.ErrNoBody) {
		api.WriteError(w, r, s.log, err)
		return
	}
	res, err := m.Run(r.Context(), name, job)
	switch {
	case errors.Is(err, host.ErrUnknownModule):
		api.WriteError(w, r, s.log, &api.Error{Status: http.StatusNotFound, Message: "module " + name + " is not configured"})
		return
	case errors.Is(err, host.ErrUnavailable), errors.Is(err, host.ErrClosed):
		api.WriteError(w, r, s.log, &api.Error{Status: http.StatusServiceUnavailable, Message: "module " + name + " is unavailable", Err: err, Chain: true})
		return
	}
	out := runResponse{Module: name, OK: err == nil}
	if res != nil {
		out.Digest, out.Output = res.Digest, res.Output
		out.DurationMS = float64(res.Duration.Microseconds()) / 1000
		out.HostCalls = res.HostCalls
	}
	if err != nil {
		out.Kind, out.Error = host.Kind(err), err.Error()
		var ge *guest.Error
		if errors.As(err, &ge) {
			out.Code = ge.Code
		}
	}
	api.WriteJSON(w, http.StatusOK, out)
}
