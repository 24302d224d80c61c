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

// MaxRevocationsPerUID bounds the revocations of one uid's tokens that
// are in force (not yet pruned). A uid may mint tokens for itself and
// revoke them: unbounded, each revocation would live for up to the maximum
// TTL and make every later one rewrite a larger file. Root's tokens, and
// revocations by ID alone (root only), are not counted.
const MaxRevocationsPerUID = 1024

// ErrTooManyRevocations: a uid has MaxRevocationsPerUID revocations in force.
var ErrTooManyRevocations = errors.New("too many revoked tokens of this uid are still in force")

// revocations is the revocation list: jti → unix expiry of the token. Readers
// load an immutable snapshot without locking; writers copy it, persist and
// swap. owners (writers only, under mu) holds the uid of the entries that
// count against a uid's quota.
type revocations struct {
	path   string // "" = memory only
	mu     sync.Mutex
	set    atomic.Pointer[map[string]int64]
	owners map[string]uint32
}

// revocationFile is the on-disk format: {"revoked": {"<jti>": <unix exp>},
// "owners": {"<jti>": <uid>}}. owners is absent in lists written before it
// existed; their entries count against no uid.
type revocationFile struct {
	Revoked map[string]int64  `json:"revoked"`
	Owners  map[string]uint32 `json:"owners,omitempty"`
}

// loadRevocations reads the list at path; a missing file is an empty list.
func loadRevocations(path string, now time.Time) (*revocations, error) {
	r := &revocations{path: path, owners: map[string]uint32{}}
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
			if f.Owners != nil {
				r.owners = f.Owners
			}
		}
	}
	prune(m, now)
	pruneOwners(r.owners, m)
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

// add revokes id until exp; a non-zero owner is the uid whose quota the
// entry counts against (ErrTooManyRevocations when it is full). The new
// list is in force before it is persisted: a failed write leaves the token
// revoked in memory and reports the error.
func (r *revocations) add(id string, exp, now time.Time, owner uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := maps.Clone(*r.set.Load())
	prune(m, now)
	pruneOwners(r.owners, m)
	old, ok := m[id]
	if !ok && owner != 0 {
		n := 0
		for _, uid := range r.owners {
			if uid == owner {
				n++
			}
		}
		if n >= MaxRevocationsPerUID {
			return fmt.Errorf("%w: uid %d has %d", ErrTooManyRevocations, owner, n)
		}
		r.owners[id] = owner
	}
	if !ok || old < exp.Unix() {
		m[id] = exp.Unix()
	}
	r.set.Store(&m)
	if r.path == "" {
		return nil
	}
	data, err := json.Marshal(revocationFile{Revoked: m, Owners: r.owners})
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

// pruneOwners drops the owners of entries no longer in m.
func pruneOwners(owners map[string]uint32, m map[string]int64) {
	for id := range owners {
		if _, ok := m[id]; !ok {
			delete(owners, id)
		}
	}
}
