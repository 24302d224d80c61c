package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker"
	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/client"
)

// BenchmarkBrokerRequest measures a small authorized request (GET /health,
// one policy decision) over broker.sock with 1 and 8 concurrent clients,
// beside the same handler called in-process, and prints the ratio.
func BenchmarkBrokerRequest(b *testing.B) {
	br, cfg := startBenchBroker(b, "")
	ctx := context.Background()
	sock := cfg.SocketPath("broker")
	h := br.Handler("broker")
	peerCtx := api.WithPeer(ctx, api.Peer{UID: 0, PID: int32(os.Getpid())})

	rates := map[string]float64{}
	for _, clients := range []int{1, 8} {
		socket := func(b *testing.B) {
			cl := client.New(sock, "2026-12-01")
			defer cl.Close()
			parallel(b, clients, func() error { return cl.Do(ctx, "GET", "/health", nil, nil) })
		}
		inproc := func(b *testing.B) {
			parallel(b, clients, func() error {
				r := httptest.NewRequest("GET", "/health?api-version=2026-12-01", nil).WithContext(peerCtx)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					return fmt.Errorf("status %d", w.Code)
				}
				return nil
			})
		}
		for name, f := range map[string]func(*testing.B){"socket": socket, "inprocess": inproc} {
			key := fmt.Sprintf("clients=%d/%s", clients, name)
			b.Run(key, func(b *testing.B) {
				f(b)
				rates[key] = float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(rates[key], "req/s")
			})
		}
		fmt.Printf("broker.sock GET /health, %d client(s): socket %.0f req/s, in-process %.0f req/s, ratio %.2f\n",
			clients, rates[fmt.Sprintf("clients=%d/socket", clients)], rates[fmt.Sprintf("clients=%d/inprocess", clients)],
			rates[fmt.Sprintf("clients=%d/socket", clients)]/rates[fmt.Sprintf("clients=%d/inprocess", clients)])
	}
}

// startBenchBroker serves wardend in this process (real sockets) with
// extra config appended to its [warden] table, waits until broker.sock
// answers, and stops it when the benchmark ends.
func startBenchBroker(b *testing.B, extra string) (*broker.Broker, *config.Config) {
	b.Helper()
	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("[warden]\nstate_dir = %q\nsocket_dir = %q\n%s", filepath.Join(dir, "state"), filepath.Join(dir, "run"), extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	c, err := config.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	br, err := broker.New(ctx, c, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { br.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	hc := client.New(c.SocketPath("broker"), "2026-12-01")
	defer hc.Close()
	for deadline := time.Now().Add(10 * time.Second); hc.Do(ctx, "GET", "/health", nil, nil) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("broker not ready")
		}
	}
	return br, c
}

// parallel runs b.N calls of f on n goroutines, each taking the next call
// until b.N are done (as b.RunParallel does), so that no goroutine is left
// alone at the end with a share of its own.
func parallel(b *testing.B, n int, f func() error) {
	var wg sync.WaitGroup
	var once sync.Once
	var next atomic.Int64
	total := int64(b.N)
	b.ResetTimer()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if err := f(); err != nil {
					once.Do(func() { b.Error(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
}
