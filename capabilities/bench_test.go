package capabilities

import (
	"testing"
	"time"
)

// BenchmarkVerifyCold verifies with the cache disabled: signature, typ and
// claims decoding on every call.
func BenchmarkVerifyCold(b *testing.B) {
	f := newFixture(b, Options{CacheSize: -1})
	tok, _ := f.mint(b, 1000, signCap, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(ctx, tok, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCached verifies a cached token: hash, shard read lock,
// expiry, revocation of the token and its ancestors, uid.
func BenchmarkVerifyCached(b *testing.B) {
	f := newFixture(b, Options{})
	parent, _ := f.mint(b, 1000, signCap, time.Hour)
	tok, _, err := f.a.Attenuate(ctx, parent, 1000, signCap, 0, 1000)
	if err != nil {
		b.Fatal(err)
	}
	// A non-empty revocation list, so the lookups are really made.
	f.a.Revoke(ctx, "someone-else", time.Time{})
	if _, err := f.a.Verify(ctx, tok, 1000); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(ctx, tok, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel is BenchmarkVerifyCached from GOMAXPROCS
// goroutines on different tokens: it scales only if no global lock is taken.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	f := newFixture(b, Options{})
	toks := make([]string, 64)
	for i := range toks {
		toks[i], _ = f.mint(b, 1000, signCap, time.Hour)
		f.a.Verify(ctx, toks[i], 1000)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := f.a.Verify(ctx, toks[i%len(toks)], 1000); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkMint mints one token per iteration (an ES256 signature).
func BenchmarkMint(b *testing.B) {
	f := newFixture(b, Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := f.a.Mint(ctx, "agent", 1000, signCap, 0); err != nil {
			b.Fatal(err)
		}
	}
}
