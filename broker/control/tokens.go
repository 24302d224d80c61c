package control

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/policy"
)

// capability is the wire form of a capability in broker.sock requests.
type capability struct {
	Resource string   `json:"resource"`
	Ops      []string `json:"ops"`
}

type mintRequest struct {
	Capabilities []capability `json:"capabilities"`
	TTLSeconds   int64        `json:"ttlSeconds"`
}

type attenuateRequest struct {
	Token        string       `json:"token"`
	Capabilities []capability `json:"capabilities"`
	TTLSeconds   int64        `json:"ttlSeconds"`
	UID          *uint32      `json:"uid"`
}

type tokenResponse struct {
	Token     string `json:"token"`
	ID        string `json:"id"`
	ExpiresAt string `json:"expiresAt"`
}

func toCaps(cs []capability) []capabilities.Capability {
	out := make([]capabilities.Capability, len(cs))
	for i, c := range cs {
		out[i] = capabilities.Capability{Resource: c.Resource, Ops: c.Ops}
	}
	return out
}

// detailCaps renders capabilities as plain JSON values for input.action.details.
func detailCaps(cs []capability) []any {
	out := make([]any, len(cs))
	for i, c := range cs {
		ops := make([]any, len(c.Ops))
		for j, op := range c.Ops {
			ops[j] = op
		}
		out[i] = map[string]any{"resource": c.Resource, "ops": ops}
	}
	return out
}

// maxTTLSeconds is the largest ttlSeconds a time.Duration holds: past it
// the product wraps, and a request for centuries got a token of seconds.
const maxTTLSeconds = int64(math.MaxInt64 / time.Second)

func ttl(seconds int64) (time.Duration, error) {
	switch {
	case seconds < 0:
		return 0, api.BadRequest(`parameter "ttlSeconds" has an invalid value` + "\ncaused by: must not be negative")
	case seconds > maxTTLSeconds:
		return 0, api.BadRequest(`parameter "ttlSeconds" has an invalid value` + "\ncaused by: too large")
	}
	return time.Duration(seconds) * time.Second, nil
}

// scope checks a request's capabilities and lifetime before any decision:
// a malformed request is a 400, not a policy refusal.
func scope(cs []capability, ttlSeconds int64) ([]capabilities.Capability, time.Duration, error) {
	d, err := ttl(ttlSeconds)
	if err != nil {
		return nil, 0, err
	}
	caps := toCaps(cs)
	if err := capabilities.ValidateCapabilities(caps); err != nil {
		return nil, 0, api.InvalidParameter("capabilities", err)
	}
	return caps, d, nil
}

func (s *Server) subject(uid uint32) string {
	if name := s.guard.PrincipalName(uid); name != "" {
		return name
	}
	return "uid:" + strconv.FormatUint(uint64(uid), 10)
}

func (s *Server) mint(w http.ResponseWriter, r *http.Request) {
	var req mintRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	caps, d, err := scope(req.Capabilities, req.TTLSeconds)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	caller, _ := s.guard.Caller(r.Context())
	if err := s.authorize(r, policy.Action{Service: "tokens", Operation: "mint", Resource: "tokens",
		Details: map[string]any{"capabilities": detailCaps(req.Capabilities), "ttl_seconds": req.TTLSeconds}}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	tok, c, err := s.tokens.Mint(r.Context(), s.subject(caller.UID), caller.UID, caps, d)
	if err != nil {
		api.WriteError(w, r, s.log, tokenError("capabilities", err))
		return
	}
	s.log.Info("token minted", "id", c.ID, "uid", caller.UID, "exp", c.Expiry)
	api.WriteJSON(w, http.StatusOK, tokenResponse{Token: tok, ID: c.ID, ExpiresAt: c.Expiry.UTC().Format(time.RFC3339)})
}

func (s *Server) attenuate(w http.ResponseWriter, r *http.Request) {
	var req attenuateRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	caps, d, err := scope(req.Capabilities, req.TTLSeconds)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	caller, _ := s.guard.Caller(r.Context())
	parent, err := s.tokens.Verify(r.Context(), req.Token, caller.UID)
	if err != nil {
		api.WriteError(w, r, s.log, tokenError("token", err))
		return
	}
	to := caller.UID
	if req.UID != nil {
		to = *req.UID
	}
	if err := s.authorize(r, policy.Action{Service: "tokens", Operation: "attenuate", Resource: "tokens",
		Details: map[string]any{"uid": int64(to), "parent": parent.ID, "capabilities": detailCaps(req.Capabilities), "ttl_seconds": req.TTLSeconds}}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	tok, c, err := s.tokens.Attenuate(r.Context(), req.Token, caller.UID, caps, d, to)
	if err != nil {
		api.WriteError(w, r, s.log, tokenError("capabilities", err))
		return
	}
	s.log.Info("token attenuated", "id", c.ID, "parent", parent.ID, "uid", to)
	api.WriteJSON(w, http.StatusOK, tokenResponse{Token: tok, ID: c.ID, ExpiresAt: c.Expiry.UTC().Format(time.RFC3339)})
}

type revokeRequest struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	details := map[string]any{"id": req.ID, "token_uid": nil}
	var presented *capabilities.Claims
	switch {
	case req.Token != "":
		c, err := s.tokens.Inspect(r.Context(), req.Token)
		if err != nil {
			api.WriteError(w, r, s.log, tokenError("token", err))
			return
		}
		if req.ID != "" && req.ID != c.ID {
			api.WriteError(w, r, s.log, api.BadRequest(`parameter "id" has an invalid value`+"\ncaused by: id and token name different tokens"))
			return
		}
		req.ID, presented = c.ID, c
		details["id"], details["token_uid"] = c.ID, int64(c.UID)
	case req.ID == "":
		api.WriteError(w, r, s.log, api.BadRequest(`parameter "id" has an invalid value`+"\ncaused by: give id or token"))
		return
	}
	if err := s.authorize(r, policy.Action{Service: "tokens", Operation: "revoke", Resource: "tokens", Details: details}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	// A uid's revocations of its own tokens count against its quota; root's
	// do not, so that a uid that filled its quota cannot stop root from
	// revoking one of its tokens.
	var err error
	if p, ok := api.PeerFromContext(r.Context()); presented != nil && (!ok || p.UID != 0) {
		err = s.tokens.RevokeToken(r.Context(), presented)
	} else if presented != nil {
		err = s.tokens.Revoke(r.Context(), presented.ID, presented.Expiry)
	} else {
		err = s.tokens.Revoke(r.Context(), req.ID, time.Time{})
	}
	if err != nil {
		api.WriteError(w, r, s.log, tokenError("id", err))
		return
	}
	s.log.Info("token revoked", "id", req.ID)
	api.NoContent(w)
}

type introspectRequest struct {
	Token string `json:"token"`
}

// introspection is RFC 7662-like: active plus the token's claims.
type introspection struct {
	Active    bool                      `json:"active"`
	Issuer    string                    `json:"iss,omitempty"`
	Audience  string                    `json:"aud,omitempty"`
	Subject   string                    `json:"sub,omitempty"`
	IssuedAt  int64                     `json:"iat,omitempty"`
	NotBefore int64                     `json:"nbf,omitempty"`
	Expiry    int64                     `json:"exp,omitempty"`
	ID        string                    `json:"jti,omitempty"`
	Cnf       *cnf                      `json:"cnf,omitempty"`
	Caps      []capabilities.Capability `json:"cap,omitempty"`
	Parent    string                    `json:"par,omitempty"`
	Ancestors []string                  `json:"anc,omitempty"`
	Reason    string                    `json:"reason,omitempty"`
}

type cnf struct {
	UID uint32 `json:"uid"`
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	var req introspectRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.authorize(r, policy.Action{Service: "tokens", Operation: "introspect", Resource: "tokens"}); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	c, err := s.tokens.Inspect(r.Context(), req.Token)
	if err != nil {
		api.WriteJSON(w, http.StatusOK, introspection{Active: false, Reason: capabilities.ErrInvalid.Error()})
		return
	}
	out := introspection{
		Active: true, Issuer: "warden", Audience: "warden", Subject: c.Subject,
		IssuedAt: c.IssuedAt.Unix(), NotBefore: c.NotBefore.Unix(), Expiry: c.Expiry.Unix(), ID: c.ID,
		Cnf: &cnf{UID: c.UID}, Caps: c.Capabilities, Parent: c.Parent, Ancestors: c.Ancestors,
	}
	if err := s.tokens.Active(c); err != nil {
		out.Active, out.Reason = false, err.Error()
	}
	api.WriteJSON(w, http.StatusOK, out)
}
