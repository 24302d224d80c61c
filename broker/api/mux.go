package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
)

// Route is one path of a service and the methods it answers. A route serves
// the api-versions from MinVersion on, up to MaxVersion when that is set:
// aziot answers a path that exists only for a newer version with 404.
type Route struct {
	// Pattern is a chi pattern such as "/keypair/{keyId}".
	Pattern    string
	MinVersion string
	MaxVersion string
	// Handlers maps an HTTP method to its handler.
	Handlers map[string]http.HandlerFunc
}

// Service describes one socket's API.
type Service struct {
	// Name is the service's name in logs and policy input (keyd, tokens, …).
	Name string
	// Versions lists the api-version values the service accepts.
	Versions []string
	Routes   []Route
	// Middleware wraps every route handler, after routing (so an unknown
	// path is a 404 whatever the request carries).
	Middleware []func(http.Handler) http.Handler
	Logger     *slog.Logger
}

// APIVersion returns the request's api-version, as checked by the mux.
func APIVersion(r *http.Request) string {
	v, _ := queryValue(r.URL.RawQuery, "api-version")
	return v
}

// queryValue is url.ParseQuery(query)[name][0] without building the map:
// pairs are split at "&", a pair holding ";" or a bad escape is skipped.
func queryValue(query, name string) (string, bool) {
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if !strings.ContainsAny(v, "%+") {
			return v, true
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			return uv, true
		}
	}
	return "", false
}

// Handler returns the http.Handler for s with aziot's framework behaviour:
// api-version required and known (400), routes by version (404 "not found"
// otherwise), a known path with another method is 400 "method not allowed".
func (s *Service) Handler() http.Handler {
	byVersion := make(map[string]http.Handler, len(s.Versions))
	for _, v := range s.Versions {
		byVersion[v] = s.muxFor(v)
	}
	logger := s.Logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := queryValue(r.URL.RawQuery, "api-version")
		if !ok {
			WriteError(w, r, logger, BadRequest("api-version not specified"))
			return
		}
		h, ok := byVersion[v]
		if !ok {
			WriteError(w, r, logger, BadRequest("invalid api-version "+strconv.Quote(v)))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Service) muxFor(version string) http.Handler {
	m := chi.NewMux()
	m.NotFound(func(w http.ResponseWriter, r *http.Request) { WriteError(w, r, s.Logger, NotFound()) })
	m.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { WriteError(w, r, s.Logger, MethodNotAllowed()) })
	for _, rt := range s.Routes {
		if version < rt.MinVersion || (rt.MaxVersion != "" && version > rt.MaxVersion) {
			continue
		}
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			var handler http.Handler = s.unsupported()
			if h, ok := rt.Handlers[method]; ok {
				handler = h
				for _, mw := range slices.Backward(s.Middleware) {
					handler = mw(handler)
				}
			}
			m.Method(method, rt.Pattern, validPath(handler, s.Logger))
		}
	}
	return m
}

// unsupported answers a known path called with a method it does not serve.
// As in aziot, the framework reads the body before it looks at the method, so
// a PUT that is not JSON is a 415 and malformed JSON a 422 even here; only
// then is it 400 "method not allowed".
func (s *Service) unsupported() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v json.RawMessage
		if err := ReadJSON(w, r, &v); err != nil && !errors.Is(err, ErrNoBody) {
			WriteError(w, r, s.Logger, err)
			return
		}
		WriteError(w, r, s.Logger, MethodNotAllowed())
	})
}

// validPath answers 404 when a path capture is not valid percent-encoded
// UTF-8, as aziot's router does not match such a path.
func validPath(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc := chi.RouteContext(r.Context()); rc != nil {
			for _, raw := range rc.URLParams.Values {
				if v, err := unescapeCapture(r, raw); err != nil || !utf8.ValidString(v) {
					WriteError(w, r, logger, NotFound())
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// PathParam returns the percent-decoded path capture name, so that IDs
// containing "/" can be sent as %2F.
func PathParam(r *http.Request, name string) string {
	v, err := unescapeCapture(r, chi.URLParam(r, name))
	if err != nil {
		return ""
	}
	return v
}

// unescapeCapture percent-decodes a capture once. chi matches the path as
// sent (URL.RawPath) when net/url kept it, and otherwise URL.Path, which
// is already decoded (net/url drops RawPath when it is the canonical
// encoding of Path, as "50%25" is of "50%"): decoding that again would
// turn "m%2541" into "mA" and "50%25" into an error.
func unescapeCapture(r *http.Request, raw string) (string, error) {
	if r.URL.RawPath == "" {
		return raw, nil
	}
	return url.PathUnescape(raw)
}
