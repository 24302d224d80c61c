package keyd

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/policy"
)

// countingDecider counts decisions and can refuse everything or stamp a
// revision.
type countingDecider struct {
	inner    api.Decider
	calls    atomic.Int64
	mu       sync.Mutex
	revision string
	denyAll  bool
}

func (c *countingDecider) Decide(ctx context.Context, in *policy.Input) (policy.Decision, error) {
	c.calls.Add(1)
	d, err := c.inner.Decide(ctx, in)
	c.mu.Lock()
	defer c.mu.Unlock()
	d.Revision = c.revision
	if c.denyAll {
		d.Allow = false
	}
	return d, err
}

func (c *countingDecider) set(rev string, deny bool) {
	c.mu.Lock()
	c.revision, c.denyAll = rev, deny
	c.mu.Unlock()
}

func (c *countingDecider) rev() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revision
}

// TestDecisionCache: allow decisions of handle operations are reused for
// the TTL, per caller, token, operation, key and mechanism, and only under
// the revision that made them; denials and ID operations always ask.
func TestDecisionCache(t *testing.T) {
	cd := &countingDecider{revision: "r1"}
	clock := time.Unix(1_800_000_000, 0)
	var clockMu sync.Mutex
	e := newEnvWith(t, Options{DecisionTTL: time.Second, PolicyRevision: cd.rev}, func(d api.Decider) api.Decider {
		cd.inner = d
		return cd
	})
	setClock := func(d time.Duration) {
		clockMu.Lock()
		clock = clock.Add(d)
		clockMu.Unlock()
	}
	e.server.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }

	h := e.importKey("a-k", bytes.Repeat([]byte{1}, 32))
	tok := e.token(uidA, capabilities.Capability{Resource: "key:a-k", Ops: []string{"sign"}})
	sign := jsonBody(map[string]any{"keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "AA=="}})
	calls := func() int64 { return cd.calls.Load() }
	steps := []struct {
		name      string
		do        func() resp
		status    int
		decisions int64 // decisions the step asks the policy for
	}{
		{"first sign decides", func() resp { return e.call(uidA, "", "POST", "/sign", sign) }, 200, 1},
		{"second sign reuses", func() resp { return e.call(uidA, "", "POST", "/sign", sign) }, 200, 0},
		{"another uid decides", func() resp { return e.call(4242, "", "POST", "/sign", sign) }, 200, 1},
		{"with a token decides", func() resp { return e.call(uidA, tok, "POST", "/sign", sign) }, 200, 1},
		{"another operation decides", func() resp {
			return e.call(uidA, "", "POST", "/parameters/algorithm", jsonBody(map[string]string{"keyHandle": h}))
		}, 400, 1},
		{"ID operations always decide", func() resp { return e.call(uidA, "", "GET", "/key/a-k", "") }, 200, 1},
		{"ID operations always decide, again", func() resp { return e.call(uidA, "", "GET", "/key/a-k", "") }, 200, 1},
		{"after the TTL, decides", func() resp { setClock(1500 * time.Millisecond); return e.call(uidA, "", "POST", "/sign", sign) }, 200, 1},
		{"a new revision decides", func() resp { cd.set("r2", false); return e.call(uidA, "", "POST", "/sign", sign) }, 200, 1},
		{"and is reused", func() resp { return e.call(uidA, "", "POST", "/sign", sign) }, 200, 0},
		{"a denial is not cached", func() resp { cd.set("r3", true); return e.call(uidA, "", "POST", "/sign", sign) }, 401, 1},
		{"so the next request decides", func() resp { return e.call(uidA, "", "POST", "/sign", sign) }, 401, 1},
	}
	for _, st := range steps {
		before := calls()
		r := st.do()
		if r.status != st.status {
			t.Fatalf("%s: status %d, want %d: %s", st.name, r.status, st.status, r.body)
		}
		if got := calls() - before; got != st.decisions {
			t.Fatalf("%s: %d policy decisions, want %d", st.name, got, st.decisions)
		}
	}
}

// TestDecisionCacheWithoutRevision: without a revision source the TTL alone
// bounds reuse.
func TestDecisionCacheWithoutRevision(t *testing.T) {
	cd := &countingDecider{revision: "r1"}
	e := newEnvWith(t, Options{DecisionTTL: time.Minute}, func(d api.Decider) api.Decider {
		cd.inner = d
		return cd
	})
	h := e.importKey("k", bytes.Repeat([]byte{1}, 32))
	sign := jsonBody(map[string]any{"keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "AA=="}})
	before := cd.calls.Load()
	for range 3 {
		check{200, ""}.verify(t, e.call(uidA, "", "POST", "/sign", sign))
	}
	if n := cd.calls.Load() - before; n != 1 {
		t.Fatalf("%d policy decisions for three signatures, want 1", n)
	}
}

// TestDecisionCacheHoldsNoRequest: the cache keeps nothing of a request
// but its own small key. An unknown parameter name is the caller's path
// segment (up to the 1 MiB header limit), authorized before it is checked,
// and a cached string that is a substring of the request line keeps the
// whole line alive: 4096 entries of either held gigabytes.
func TestDecisionCacheHoldsNoRequest(t *testing.T) {
	e := newEnvWith(t, Options{DecisionTTL: time.Minute}, nil)
	h := e.importKey("k", bytes.Repeat([]byte{1}, 32))
	body := jsonBody(map[string]string{"keyHandle": h})
	pad := strings.Repeat("p", 64<<10)
	do := func(pid int32, target string) {
		r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uidA, GID: uidA, PID: pid}))
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest { // a key handle, not a key pair's
			t.Fatalf("%.60s: status %d: %s", target, w.Code, w.Body)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 64
	before := heap()
	for i := range n {
		// A long unknown parameter name, and a known one in a long request line.
		do(int32(1000+i), fmt.Sprintf("/parameters/%d%s?api-version=2021-05-01", i, pad))
		do(int32(2000+i), "/parameters/algorithm?api-version=2021-05-01&pad="+pad)
	}
	if grown := int64(heap()) - int64(before); grown > int64(n*len(pad)/4) {
		t.Fatalf("the decision cache holds %d KiB after %d requests of %d KiB", grown>>10, 2*n, len(pad)>>10)
	}
	e.server.decisions.mu.Lock()
	defer e.server.decisions.mu.Unlock()
	for k := range e.server.decisions.cur {
		if len(k.detail) > 1<<10 {
			t.Fatalf("a %d-byte detail is cached", len(k.detail))
		}
	}
}
