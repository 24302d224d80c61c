package capabilities

import (
	"crypto/sha256"
	"sync"
	"time"
	"unsafe"
)

// cacheShards splits the verification cache so that concurrent verifies of
// different tokens rarely share a lock, and a hit only takes a read lock.
const cacheShards = 16

// cache maps sha256(token) to the token's claims once its signature and
// structure have verified. It holds no token strings. Expiry, revocation and
// uid are not cached: Verify checks them on every hit.
type cache struct {
	shards   []cacheShard
	perShard int
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]*Claims
	_  [64]byte // keep neighbouring shards' locks off one cache line
}

// newCache returns a cache holding at most size entries (size > 0).
func newCache(size int) *cache {
	n := min(cacheShards, size)
	c := &cache{shards: make([]cacheShard, n), perShard: size / n}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]*Claims)
	}
	return c
}

// cacheKey hashes token without copying it: Sum256 only reads its input
// and keeps no reference, so viewing the string's bytes is safe.
func cacheKey(token string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

func (c *cache) shard(key *[sha256.Size]byte) *cacheShard {
	return &c.shards[int(key[0])%len(c.shards)]
}

// get returns the claims cached under key, or nil if there are none or the
// token has expired at now.
func (c *cache) get(key [sha256.Size]byte, now time.Time) *Claims {
	s := c.shard(&key)
	s.mu.RLock()
	cl := s.m[key]
	s.mu.RUnlock()
	if cl == nil || !now.Before(cl.Expiry) {
		return nil
	}
	return cl
}

// put caches cl under key. A full shard first drops its expired entries and,
// if none, one arbitrary entry (Go's map iteration order is random).
func (c *cache) put(key [sha256.Size]byte, cl *Claims, now time.Time) {
	s := c.shard(&key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok && len(s.m) >= c.perShard {
		for k, v := range s.m {
			if !now.Before(v.Expiry) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= c.perShard {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	s.m[key] = cl
}

// len returns the number of entries, for tests.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
