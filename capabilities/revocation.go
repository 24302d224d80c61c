package capabilities

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warden-iot/warden/internal/atomicfile"
)

// pruneMargin keeps a revocation entry this long past the token's expiry,
// so that clock adjustments cannot resurrect a revoked token.
const pruneMargin = 5 * time.Minute

// revocations is the revocation list: jti → unix expiry of the token. Readers
// load an immutable snapshot without locking; writers copy it, persist and
// swap.
type revocations struct {
	path string // "" = memory only
	mu   sync.Mutex
	set  atomic.Pointer[map[string]int64]
}

// revocationFile is the on-disk format: {"revoked": {"<jti>": <unix exp>}}.
type revocationFile struct {
	Revoked map[string]int64 `json:"revoked"`
}

// loadRevocations reads the list at path; a missing file is an empty list.
func loadRevocations(path string, now time.Time) (*revocations, error) {
	r := &revocations{path: path}
	m := map[string]int64{}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("revocation list: %w", err)
		default:
			var f revocationFile
			if err := json.Unmarshal(data, &f); err != nil {
				return nil, fmt.Errorf("revocation list %s is corrupt: %w", path, err)
			}
			if f.Revoked == nil {
				return nil, fmt.Errorf(`revocation list %s is corrupt: no "revoked" object`, path)
			}
			m = f.Revoked
		}
	}
	prune(m, now)
	r.set.Store(&m)
	return r, nil
}

// revoked returns the first of c's jti and ancestors that is revoked.
func (r *revocations) revoked(c *Claims) (string, bool) {
	m := *r.set.Load()
	if len(m) == 0 {
		return "", false
	}
	if _, ok := m[c.ID]; ok {
		return c.ID, true
	}
	for _, id := range c.Ancestors {
		if _, ok := m[id]; ok {
			return id, true
		}
	}
	return "", false
}

// add revokes id until exp. The new list is in force before it is persisted:
// a failed write leaves the token revoked in memory and reports the error.
func (r *revocations) add(id string, exp, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := maps.Clone(*r.set.Load())
	prune(m, now)
	if old, ok := m[id]; !ok || old < exp.Unix() {
		m[id] = exp.Unix()
	}
	r.set.Store(&m)
	if r.path == "" {
		return nil
	}
	data, err := json.Marshal(revocationFile{Revoked: m})
	if err != nil {
		return fmt.Errorf("encode revocation list: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("revoked in memory only: %w", err)
	}
	if err := atomicfile.Write(r.path, data, 0o600); err != nil {
		return fmt.Errorf("revoked in memory only: %w", err)
	}
	return nil
}

// prune drops entries whose token expired more than pruneMargin ago. An
// attenuated token never outlives its ancestors, so once an ancestor's entry
// is pruned every descendant has expired too.
func prune(m map[string]int64, now time.Time) {
	cutoff := now.Add(-pruneMargin).Unix()
	for id, exp := range m {
		if exp < cutoff {
			delete(m, id)
		}
	}
}
