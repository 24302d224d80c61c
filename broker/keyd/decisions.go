package keyd

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/warden-iot/warden/broker/api"
)

// Options tune the key service.
type Options struct {
	// DecisionTTL is how long an allow decision for a handle operation is
	// reused for the same caller, token, operation, key and mechanism
	// without asking the policy again; 0 asks the policy on every request.
	// Reuse is bounded by the policy revision too (see PolicyRevision).
	// Reused decisions are not written to the decision log again, so the
	// broker leaves this 0 when a decision log is configured.
	DecisionTTL time.Duration
	// PolicyRevision reports the policy revision in force; a cached
	// decision of another revision is not reused. nil: TTL only.
	PolicyRevision func() string
}

// decisionCacheLimit bounds the remembered decisions (two generations of
// half each, as hsm.Handles' cache).
const decisionCacheLimit = 4096

// maxCachedDetail bounds the detail of a remembered decision. Mechanisms
// and parameter names are a few bytes, but a parameter name is the
// caller's path segment, authorized before it is checked: 4096 entries of
// names up to the 1 MiB header limit held gigabytes.
const maxCachedDetail = 64

// decisionKey is everything of the policy input that a handle operation's
// decision can depend on, except the time.
type decisionKey struct {
	uid, gid   uint32
	pid        int32
	exe        string
	token      string // the capability token's ID, "" without one
	op, key    string
	detail     string // the mechanism or parameter name
	apiVersion string
}

type decisionEntry struct {
	revision string
	expires  time.Time
}

// decisionCache remembers allow decisions of handle operations for a short
// time. Denials are never cached: they are rare and must be logged.
type decisionCache struct {
	ttl      time.Duration
	revision func() string

	mu       sync.Mutex
	cur, old map[decisionKey]decisionEntry
}

func newDecisionCache(o Options) *decisionCache {
	if o.DecisionTTL <= 0 {
		return nil
	}
	return &decisionCache{ttl: o.DecisionTTL, revision: o.PolicyRevision,
		cur: make(map[decisionKey]decisionEntry), old: make(map[decisionKey]decisionEntry)}
}

// key returns the cache key of a request's action; ok is false when the
// request has no peer (then nothing is cached).
func (c *decisionCache) key(r *http.Request, op, keyID, detail string) (decisionKey, bool) {
	ctx := r.Context()
	p, ok := api.PeerFromContext(ctx)
	if !ok || len(detail) > maxCachedDetail {
		return decisionKey{}, false
	}
	k := decisionKey{uid: p.UID, gid: p.GID, pid: p.PID, exe: p.Exe, op: op, key: keyID, detail: detail, apiVersion: api.APIVersion(r)}
	if t := api.TokenFromContext(ctx); t != nil {
		k.token = t.ID
	}
	return k, true
}

func (c *decisionCache) currentRevision() string {
	if c.revision == nil {
		return ""
	}
	return c.revision()
}

// allowed reports whether an allow decision for k is still good.
func (c *decisionCache) allowed(k decisionKey, now time.Time) bool {
	rev := c.currentRevision()
	c.mu.Lock()
	e, ok := c.cur[k]
	if !ok {
		e, ok = c.old[k]
	}
	c.mu.Unlock()
	return ok && e.revision == rev && now.Before(e.expires)
}

// remember records an allow decision made by revision rev at now.
func (c *decisionCache) remember(k decisionKey, rev string, now time.Time) {
	if c.revision == nil {
		rev = "" // no revision to compare with: the TTL alone bounds reuse
	} else if rev != c.revision() {
		return // the policy changed while deciding
	}
	// detail and apiVersion are substrings of the request line: cached as
	// they are, they would keep the whole line (up to 1 MiB) alive.
	k.detail, k.apiVersion = strings.Clone(k.detail), strings.Clone(k.apiVersion)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= decisionCacheLimit/2 {
		c.old, c.cur = c.cur, c.old
		clear(c.cur)
	}
	c.cur[k] = decisionEntry{revision: rev, expires: now.Add(c.ttl)}
}
