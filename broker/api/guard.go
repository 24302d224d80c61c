package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// TokenVerifier checks a capability token presented on a connection from uid.
type TokenVerifier interface {
	Verify(ctx context.Context, token string, uid uint32) (*capabilities.Claims, error)
}

// Decider evaluates the policy on an input document.
type Decider interface {
	Decide(ctx context.Context, in *policy.Input) (policy.Decision, error)
}

// Guard is the authentication and authorization stage of the request
// pipeline, shared by every socket: it verifies a bearer capability token
// against the connection's uid, then decides each action, first by the
// token's scope (a hard rule in Go), then by the policy.
type Guard struct {
	tokens     TokenVerifier
	decider    Decider
	log        *slog.Logger
	now        func() time.Time
	principals atomic.Pointer[map[uint32]string]
}

// NewGuard returns a Guard. now may be nil (time.Now).
func NewGuard(tokens TokenVerifier, decider Decider, logger *slog.Logger, now func() time.Time) *Guard {
	if now == nil {
		now = time.Now
	}
	g := &Guard{tokens: tokens, decider: decider, log: logger, now: now}
	g.SetPrincipalNames(nil)
	return g
}

// SetPrincipalNames replaces the uid → principal name index used to fill
// input.caller.principal (on config reload).
func (g *Guard) SetPrincipalNames(names map[uint32]string) {
	if names == nil {
		names = map[uint32]string{}
	}
	g.principals.Store(&names)
}

// PrincipalName returns the principal name of uid, or "".
func (g *Guard) PrincipalName(uid uint32) string { return (*g.principals.Load())[uid] }

type claimsKey struct{}

// TokenFromContext returns the verified capability token of the request, or nil.
func TokenFromContext(ctx context.Context) *capabilities.Claims {
	c, _ := ctx.Value(claimsKey{}).(*capabilities.Claims)
	return c
}

// Authenticate is middleware that verifies an "Authorization: Bearer" token,
// when one is sent, for the connection's uid; a bad token is a 401 that says
// why (never echoing the token).
func (g *Guard) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		if authz == "" {
			next.ServeHTTP(w, r)
			return
		}
		peer, ok := PeerFromContext(r.Context())
		if !ok {
			WriteError(w, r, g.log, Internal(errors.New("request without peer credentials")))
			return
		}
		scheme, tok, _ := strings.Cut(authz, " ")
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			WriteError(w, r, g.log, Unauthorized("unsupported authorization scheme: use Bearer with a capability token"))
			return
		}
		claims, err := g.tokens.Verify(r.Context(), strings.TrimSpace(tok), peer.UID)
		if err != nil {
			g.log.Info("capability token refused", "uid", peer.UID, "pid", peer.PID, "path", r.URL.Path, "reason", err)
			WriteError(w, r, g.log, TokenError(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// TokenError is the 401 for a refused token: the reason, never the token
// or the detail of a failed parse.
func TokenError(err error) *Error {
	for _, known := range []error{capabilities.ErrExpired, capabilities.ErrNotYetValid, capabilities.ErrRevoked, capabilities.ErrWrongUID} {
		if errors.Is(err, known) {
			return Unauthorized(known.Error())
		}
	}
	return Unauthorized(capabilities.ErrInvalid.Error())
}

// Caller returns the policy view of the request's peer.
func (g *Guard) Caller(ctx context.Context) (policy.Caller, bool) {
	p, ok := PeerFromContext(ctx)
	if !ok {
		return policy.Caller{}, false
	}
	return policy.Caller{UID: p.UID, GID: p.GID, PID: p.PID, Exe: p.Exe, Principal: g.PrincipalName(p.UID)}, true
}

// reservedKeys are the keys of the store no caller may use, whatever the
// policy says, with why: whoever could sign with them (or import them)
// would forge what they vouch for.
var reservedKeys = map[string]string{
	"key:" + capabilities.TokenKeyID:   "the broker's token key is used by the broker only: signing with it forges capability tokens",
	"key:" + hsm.HandleValidationKeyID: "the handle validation key is used by keyd only: an HMAC with it forges key handles",
}

// Authorize decides whether the request in ctx may perform a. An action on
// a reserved key, and one that a token does not cover, are refused without
// asking the policy. err is set only when no decision could be made (then
// the request must fail, closed).
func (g *Guard) Authorize(ctx context.Context, a policy.Action) (policy.Decision, error) {
	caller, ok := g.Caller(ctx)
	if !ok {
		return policy.Decision{}, errors.New("authorize: request without peer credentials")
	}
	if why, ok := reservedKeys[a.Resource]; ok {
		return policy.Decision{Reasons: []string{why}}, nil
	}
	in := policy.Input{Caller: caller, Action: a, Time: g.now().UTC()}
	if c := TokenFromContext(ctx); c != nil {
		if !c.Covers(a.Resource, a.Operation) {
			return policy.Decision{Reasons: []string{
				fmt.Sprintf("capability token %s does not cover %s on %s", c.ID, a.Operation, a.Resource)}}, nil
		}
		in.Token = PolicyToken(c)
	}
	d, err := g.decider.Decide(ctx, &in)
	if err != nil {
		return policy.Decision{}, fmt.Errorf("authorize %s %s on %s: %w", a.Service, a.Operation, a.Resource, err)
	}
	return d, nil
}

// PolicyToken converts verified claims to the policy input's token.
func PolicyToken(c *capabilities.Claims) *policy.Token {
	t := &policy.Token{ID: c.ID, Subject: c.Subject, Expiry: c.Expiry.Unix()}
	t.Capabilities = make([]policy.Capability, len(c.Capabilities))
	for i, cp := range c.Capabilities {
		t.Capabilities[i] = policy.Capability{Resource: cp.Resource, Ops: cp.Ops}
	}
	if c.Parent != "" {
		p := c.Parent
		t.Parent = &p
	}
	return t
}
