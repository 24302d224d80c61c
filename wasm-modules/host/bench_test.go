package host

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// The module benchmarks of `make bench` (DESIGN §8), on the probe module
// (a Go module importing encoding/json and crypto/x509 through the guest
// package, about 5 MB): ms/op is reported for each.

var quiet = slog.New(slog.DiscardHandler)

func reportMS(b *testing.B, start time.Time) {
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/op")
}

func benchConfig(b *testing.B) ModuleConfig {
	path, sum := copyModule(b, wasmOf(b, "probe"), b.TempDir(), "probe.wasm")
	return ModuleConfig{Name: "probe", Path: path, SHA256: sum}
}

// BenchmarkModuleCompileCold: read, verify and compile with an empty cache.
func BenchmarkModuleCompileCold(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		h, err := New(Options{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Load(ctx, []ModuleConfig{cfg}); err != nil {
			b.Fatal(err)
		}
		h.Close(ctx)
	}
	reportMS(b, start)
}

// BenchmarkModuleCompileCached: the same in a new host whose on-disk
// compilation cache is warm (a restart of wardend).
func BenchmarkModuleCompileCached(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	cache := filepath.Join(b.TempDir(), "cache")
	warm, _ := New(Options{CacheDir: cache, Logger: quiet})
	if err := warm.Load(ctx, []ModuleConfig{cfg}); err != nil {
		b.Fatal(err)
	}
	warm.Close(ctx)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		h, err := New(Options{CacheDir: cache, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Load(ctx, []ModuleConfig{cfg}); err != nil {
			b.Fatal(err)
		}
		h.Close(ctx)
	}
	reportMS(b, start)
}

// BenchmarkModuleRunEmptyJob: instantiate a fresh instance (Go runtime
// init included), run an empty job, read the result, close.
func BenchmarkModuleRunEmptyJob(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	h, _ := New(Options{CacheDir: sharedCache(b), Logger: quiet})
	defer h.Close(ctx)
	if err := h.Load(ctx, []ModuleConfig{cfg}); err != nil {
		b.Fatal(err)
	}
	job := []byte(`{"steps":[]}`)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := h.Run(ctx, "probe", job); err != nil {
			b.Fatal(err)
		}
	}
	reportMS(b, start)
}

// BenchmarkModuleRunEmptyJobNative: the baseline of the above, an empty
// handler run in-process through RunNative.
func BenchmarkModuleRunEmptyJobNative(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	h, _ := New(Options{CacheDir: sharedCache(b), Logger: quiet})
	defer h.Close(ctx)
	if err := h.Load(ctx, []ModuleConfig{cfg}); err != nil {
		b.Fatal(err)
	}
	handler := func(context.Context, json.RawMessage) (any, error) { return map[string]any{"steps": nil}, nil }
	job := []byte(`{"steps":[]}`)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := h.RunNative(ctx, "probe", handler, job); err != nil {
			b.Fatal(err)
		}
	}
	reportMS(b, start)
}

// BenchmarkModuleHostCall: one job making 100 log host calls, per call
// (the fixed cost of a job subtracted by BenchmarkModuleRunEmptyJob).
func BenchmarkModuleHostCall(b *testing.B) {
	cfg := benchConfig(b)
	cfg.Limits.MaxLogBytes = 1
	ctx := context.Background()
	h, _ := New(Options{CacheDir: sharedCache(b), Logger: quiet})
	defer h.Close(ctx)
	if err := h.Load(ctx, []ModuleConfig{cfg}); err != nil {
		b.Fatal(err)
	}
	ss := make([]map[string]any, 100)
	for i := range ss {
		ss[i] = call("log", map[string]any{"msg": "x"})
	}
	job := steps(ss...)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := h.Run(ctx, "probe", job); err != nil {
			b.Fatal(err)
		}
	}
	reportMS(b, start)
}
