package capabilities

import (
	"sync"
	"testing"
	"time"
)

func TestCachedTokenStillChecked(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fixture, c *Claims)
		uid    uint32
		want   error
	}{
		{"cached ok", func(*fixture, *Claims) {}, 1000, nil},
		{"revoked after caching", func(f *fixture, c *Claims) { f.a.Revoke(ctx, c.ID, c.Expiry) }, 1000, ErrRevoked},
		{"expired after caching", func(f *fixture, _ *Claims) { f.clock.Add(10 * time.Minute) }, 1000, ErrExpired},
		{"other uid after caching", func(*fixture, *Claims) {}, 1001, ErrWrongUID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			tok, c := f.mint(t, 1000, signCap, 10*time.Minute)
			if _, err := f.a.Verify(ctx, tok, 1000); err != nil {
				t.Fatal(err)
			}
			if f.a.cache.get(cacheKey(tok), f.clock.Now()) == nil {
				t.Fatal("verified token not cached")
			}
			tt.change(f, c)
			_, err := f.a.Verify(ctx, tok, tt.uid)
			wantErr(t, err, tt.want)
		})
	}
}

func TestCacheNeverServesExpiredEntry(t *testing.T) {
	f := newFixture(t, Options{})
	tok, _ := f.mint(t, 1000, signCap, time.Minute)
	f.a.Verify(ctx, tok, 1000)
	f.clock.Add(time.Minute)
	if f.a.cache.get(cacheKey(tok), f.clock.Now()) != nil {
		t.Fatal("cache served an entry at its expiry")
	}
}

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 5, 16, 100} {
		f := newFixture(t, Options{CacheSize: size})
		for range 3*size + 20 {
			tok, _ := f.mint(t, 1, signCap, time.Minute)
			if _, err := f.a.Verify(ctx, tok, 1); err != nil {
				t.Fatal(err)
			}
			if n := f.a.cache.len(); n > size {
				t.Fatalf("size %d: cache holds %d entries", size, n)
			}
		}
	}
}

func TestCacheDisabled(t *testing.T) {
	f := newFixture(t, Options{CacheSize: -1})
	if f.a.cache != nil {
		t.Fatal("cache not disabled")
	}
	tok, c := f.mint(t, 1, signCap, time.Minute)
	if _, err := f.a.Verify(ctx, tok, 1); err != nil {
		t.Fatal(err)
	}
	f.a.Revoke(ctx, c.ID, c.Expiry)
	_, err := f.a.Verify(ctx, tok, 1)
	wantErr(t, err, ErrRevoked)
}

// TestConcurrentVerifyRevoke runs cached verifies while tokens are revoked;
// run with -race. Once Revoke returns, no verify may succeed.
func TestConcurrentVerifyRevoke(t *testing.T) {
	f := newFixture(t, Options{CacheSize: 64})
	const n = 32
	toks := make([]string, n)
	ids := make([]*Claims, n)
	for i := range n {
		toks[i], ids[i] = f.mint(t, 1, signCap, time.Hour)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f.a.Verify(ctx, toks[i%n], 1)
			}
		})
	}
	for i := range n {
		if err := f.a.Revoke(ctx, ids[i].ID, ids[i].Expiry); err != nil {
			t.Error(err)
		}
		if _, err := f.a.Verify(ctx, toks[i], 1); err == nil {
			t.Errorf("token %d verifies after Revoke returned", i)
		}
	}
	close(stop)
	wg.Wait()
}
