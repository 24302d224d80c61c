// Package capabilities mints, verifies, attenuates and revokes Warden's
// capability tokens: ES256 JWS compact JWTs of type warden-cap+jwt that grant
// operations on resources to one uid for a short time (DESIGN.md §3,
// docs/tokens.md). It knows nothing of HTTP; the broker serves it.
package capabilities

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Errors returned by the Authority; test them with errors.Is. Their messages,
// and those of the errors that wrap them, are safe to show to the caller: they
// never contain the token.
var (
	ErrInvalid        = errors.New("invalid capability token")
	ErrExpired        = errors.New("capability token expired")
	ErrNotYetValid    = errors.New("capability token not yet valid")
	ErrRevoked        = errors.New("capability token revoked")
	ErrWrongUID       = errors.New("capability token bound to another uid")
	ErrWiden          = errors.New("requested capabilities exceed the parent token's")
	ErrTTL            = errors.New("invalid token lifetime")
	ErrInvalidRequest = errors.New("invalid token request")
)

// Defaults for Options fields left zero.
const (
	DefaultTTL       = time.Hour
	DefaultMaxTTL    = 24 * time.Hour
	DefaultCacheSize = 4096
)

// TokenKeyID is the key-store ID of the token key. It shares the store
// that keyd serves, and whoever can sign with it forges tokens of any scope
// for any uid: api.Guard refuses every action on key:<TokenKeyID>.
const TokenKeyID = "warden-token-signing-key"

// nbfLeeway tolerates a clock that stepped back a little between mint and
// verify (device clocks are set late at boot). Expiry has no leeway.
const nbfLeeway = 5 * time.Second

// maxChain is the deepest attenuation chain: a token has at most this many
// ancestors.
const maxChain = 16

// Claims are the verified contents of a token. Claims returned by Verify and
// Inspect may be shared with the verification cache: treat them as read-only.
type Claims struct {
	// ID is the token's jti: 128 random bits, base64url.
	ID string
	// Subject is the principal name of the minting caller, or "uid:<n>".
	Subject   string
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
	// UID is cnf.uid: the token is valid only on a connection from this uid.
	UID          uint32
	Capabilities []Capability
	// Parent is the jti of the token this one was attenuated from; "" for a
	// minted token.
	Parent string
	// Ancestors are the jtis of every token in the attenuation chain, root
	// first, Parent last; revoking any of them revokes this token.
	Ancestors []string
}

// Options configure an Authority. Zero values take the defaults above.
type Options struct {
	// DefaultTTL is the lifetime of a token requested with ttl 0.
	DefaultTTL time.Duration
	// MaxTTL is the longest lifetime a token may be given.
	MaxTTL time.Duration
	// RevocationPath is the revocation list file; "" keeps it in memory only.
	RevocationPath string
	// CacheSize bounds the verification cache (entries); negative disables it.
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives events (never tokens); nil means slog.Default().
	Logger *slog.Logger
}

// Authority mints and verifies tokens signed by one ES256 key. It is safe
// for concurrent use.
type Authority struct {
	signer     crypto.Signer
	pub        *ecdsa.PublicKey
	kid        string
	jwks       []byte
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time
	log        *slog.Logger
	cache      *cache // nil when disabled
	rev        *revocations
}

// NewAuthority returns an Authority signing with signer, an EC P-256 key (it
// never leaves its store: only Sign and Public are used). It loads the
// revocation list from opts.RevocationPath: a missing file is an empty list, a
// corrupt one an error.
func NewAuthority(signer crypto.Signer, opts Options) (*Authority, error) {
	if signer == nil {
		return nil, errors.New("capabilities: token key: no signer")
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("capabilities: token key: %T is not an EC P-256 public key, as ES256 needs", signer.Public())
	}
	a := &Authority{
		signer: signer, pub: pub,
		defaultTTL: opts.DefaultTTL, maxTTL: opts.MaxTTL,
		now: opts.Now, log: opts.Logger,
	}
	if a.defaultTTL == 0 {
		a.defaultTTL = DefaultTTL
	}
	if a.maxTTL == 0 {
		a.maxTTL = DefaultMaxTTL
	}
	if a.defaultTTL < time.Second || a.maxTTL < time.Second || a.defaultTTL > a.maxTTL {
		return nil, fmt.Errorf("capabilities: default TTL %s and max TTL %s: want 1s <= default <= max", a.defaultTTL, a.maxTTL)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	switch size := opts.CacheSize; {
	case size == 0:
		a.cache = newCache(DefaultCacheSize)
	case size > 0:
		a.cache = newCache(size)
	}
	var err error
	if a.kid, a.jwks, err = publicJWKS(pub); err != nil {
		return nil, fmt.Errorf("capabilities: token key: %w", err)
	}
	if a.rev, err = loadRevocations(opts.RevocationPath, a.now()); err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	return a, nil
}

// Mint issues a token for uid granting caps, valid for ttl (0 means the default
// TTL). sub names the principal; "" gives "uid:<uid>". It returns ErrTTL for a
// ttl below 1s or above the maximum, and ErrInvalidRequest for an empty scope,
// a capability without operations or a resource of bad syntax. Whether the
// caller may hold caps is the policy's decision, taken before.
func (a *Authority) Mint(ctx context.Context, sub string, uid uint32, caps []Capability, ttl time.Duration) (string, *Claims, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("mint: %w", err)
	}
	if err := ValidateCapabilities(caps); err != nil {
		return "", nil, err
	}
	if sub == "" {
		sub = fmt.Sprintf("uid:%d", uid)
	}
	now := a.now()
	exp, err := a.expiry(now, ttl)
	if err != nil {
		return "", nil, err
	}
	c := a.newClaims(now, exp, sub, uid, caps)
	tok, err := a.sign(c)
	if err != nil {
		return "", nil, err
	}
	a.log.Debug("capability token minted", "id", c.ID, "sub", c.Subject, "uid", uid, "exp", c.Expiry)
	return tok, c, nil
}

// Attenuate derives from parent, which must verify for callerUID, a token for
// toUID granting caps (ErrWiden unless Within the parent's). Its expiry is
// now+ttl (0 means the default TTL) but never later than the parent's; its
// subject is the parent's. Handing a token to another uid is a policy decision,
// taken before.
func (a *Authority) Attenuate(ctx context.Context, parent string, callerUID uint32, caps []Capability, ttl time.Duration, toUID uint32) (string, *Claims, error) {
	p, err := a.Verify(ctx, parent, callerUID)
	if err != nil {
		return "", nil, fmt.Errorf("attenuate: parent: %w", err)
	}
	if err := ValidateCapabilities(caps); err != nil {
		return "", nil, err
	}
	if !Within(caps, p.Capabilities) {
		return "", nil, fmt.Errorf("%w: every resource and operation must be granted by the parent token", ErrWiden)
	}
	if len(p.Ancestors) >= maxChain {
		return "", nil, fmt.Errorf("%w: attenuation chain longer than %d tokens", ErrInvalidRequest, maxChain)
	}
	now := a.now()
	exp, err := a.expiry(now, ttl)
	if err != nil {
		return "", nil, err
	}
	if exp.After(p.Expiry) {
		exp = p.Expiry
	}
	c := a.newClaims(now, exp, p.Subject, toUID, caps)
	c.Parent = p.ID
	c.Ancestors = append(slices.Clip(p.Ancestors), p.ID)
	tok, err := a.sign(c)
	if err != nil {
		return "", nil, err
	}
	a.log.Debug("capability token attenuated", "id", c.ID, "parent", p.ID, "sub", c.Subject, "uid", toUID, "exp", c.Expiry)
	return tok, c, nil
}

// expiry resolves a requested ttl to an expiry, in whole seconds as JWT
// carries it.
func (a *Authority) expiry(now time.Time, ttl time.Duration) (time.Time, error) {
	switch {
	case ttl == 0:
		ttl = a.defaultTTL
	case ttl < time.Second:
		return time.Time{}, fmt.Errorf("%w: %s is shorter than 1s", ErrTTL, ttl)
	case ttl > a.maxTTL:
		return time.Time{}, fmt.Errorf("%w: %s exceeds the maximum %s", ErrTTL, ttl, a.maxTTL)
	}
	return now.Add(ttl).Truncate(time.Second), nil
}

func (a *Authority) newClaims(now, exp time.Time, sub string, uid uint32, caps []Capability) *Claims {
	var id [16]byte
	rand.Read(id[:]) // never fails (crypto/rand, Go 1.24+)
	now = now.Truncate(time.Second)
	return &Claims{
		ID:           base64.RawURLEncoding.EncodeToString(id[:]),
		Subject:      sub,
		IssuedAt:     now,
		NotBefore:    now,
		Expiry:       exp,
		UID:          uid,
		Capabilities: cloneCapabilities(caps),
	}
}

// Verify checks token for a request from uid: signature (ES256, this
// Authority's key), typ, iss and aud, validity period, revocation of the
// token and of each ancestor, and cnf.uid == uid. A cached token is checked
// for expiry, revocation and uid again on every call.
func (a *Authority) Verify(_ context.Context, token string, uid uint32) (*Claims, error) {
	now := a.now()
	c, err := a.inspect(token, now)
	if err != nil {
		return nil, err
	}
	if err := a.active(c, now); err != nil {
		return nil, err
	}
	if c.UID != uid {
		return nil, fmt.Errorf("%w: the request comes from uid %d", ErrWrongUID, uid)
	}
	return c, nil
}

// Inspect checks token's signature and structure only (not expiry, revocation
// or uid), for introspection and for revocation by token.
func (a *Authority) Inspect(_ context.Context, token string) (*Claims, error) {
	return a.inspect(token, a.now())
}

func (a *Authority) inspect(token string, now time.Time) (*Claims, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, maxTokenLen)
	}
	if a.cache == nil {
		return a.parse(token)
	}
	key := cacheKey(token)
	if c := a.cache.get(key, now); c != nil {
		return c, nil
	}
	c, err := a.parse(token)
	if err != nil {
		return nil, err
	}
	if now.Before(c.Expiry) {
		a.cache.put(key, c, now)
	}
	return c, nil
}

// Active returns nil if c is within its validity period and neither c nor any
// of its ancestors is revoked, else ErrExpired, ErrNotYetValid or ErrRevoked.
func (a *Authority) Active(c *Claims) error {
	return a.active(c, a.now())
}

func (a *Authority) active(c *Claims, now time.Time) error {
	// A token minted before a restart that lowered the maximum TTL ends
	// at iat + the maximum TTL (in whole seconds, as exp is): a revocation
	// by id, kept for the maximum TTL, must outlive it.
	exp := c.Expiry
	if end := c.IssuedAt.Add((a.maxTTL + time.Second - 1).Truncate(time.Second)); end.Before(exp) {
		exp = end
	}
	if !now.Before(exp) {
		return fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if now.Add(nbfLeeway).Before(c.NotBefore) {
		return fmt.Errorf("%w before %s", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if id, ok := a.rev.revoked(c); ok {
		if id == c.ID {
			return fmt.Errorf("%w: token %s", ErrRevoked, id)
		}
		return fmt.Errorf("%w: ancestor token %s", ErrRevoked, id)
	}
	return nil
}

// Revoke adds the token id to the persistent revocation list; tokens
// attenuated from it, at any depth, are revoked with it. exp is the token's
// expiry, after which the entry is pruned; zero keeps it for the maximum TTL
// from now, which outlives any token. The revocation takes effect at once,
// even when persisting it fails (the error says so).
func (a *Authority) Revoke(ctx context.Context, id string, exp time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: token id must be 1 to %d bytes", ErrInvalidRequest, maxIDLen)
	}
	now := a.now()
	if exp.IsZero() {
		exp = now.Add(a.maxTTL)
	}
	return a.revoke(id, exp, now, 0)
}

// RevokeToken is Revoke for a token the caller presented, until its
// expiry. The revocation counts against the quota of the token's uid
// (MaxRevocationsPerUID; root's are not counted): ErrTooManyRevocations
// when it is full.
func (a *Authority) RevokeToken(ctx context.Context, c *Claims) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if c.ID == "" || len(c.ID) > maxIDLen {
		return fmt.Errorf("%w: token id must be 1 to %d bytes", ErrInvalidRequest, maxIDLen)
	}
	return a.revoke(c.ID, c.Expiry, a.now(), c.UID)
}

func (a *Authority) revoke(id string, exp, now time.Time, owner uint32) error {
	if err := a.rev.add(id, exp, now, owner); err != nil {
		return fmt.Errorf("revoke %s: %w", id, err)
	}
	a.log.Info("capability token revoked", "id", id, "exp", exp.UTC())
	return nil
}

// JWKS returns the public token key as a JWK set: {"keys":[{… "kid", "alg":
// "ES256", "use": "sig"}]}, kid being the key's RFC 7638 thumbprint.
func (a *Authority) JWKS() ([]byte, error) {
	return slices.Clone(a.jwks), nil
}
