package policy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe writer that counts its writes.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSuffix(b.buf.String(), "\n"), "\n")
}

// failingWriter fails while err is set.
type failingWriter struct {
	mu  sync.Mutex
	err error
	n   int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.n += bytes.Count(p, []byte{'\n'})
	return len(p), nil
}

func (w *failingWriter) set(err error) { w.mu.Lock(); w.err = err; w.mu.Unlock() }

const secretToken = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0.c2ln"

func TestDecisionLogLinesHaveNoSecrets(t *testing.T) {
	buf := &syncBuffer{}
	dl := NewDecisionLog(buf, DecisionLogOptions{Logger: quietLogger()})
	e := newTestEngine(t, Options{Principals: testPrincipals, DecisionLog: dl})
	ctx := context.Background()
	req := withToken(in(2000, "keyd", "load", "key:device-id"), Capability{Resource: "key:device-id", Ops: []string{"load"}})
	req.Action.Details = map[string]any{"token": secretToken, "keyBytes": "c2VjcmV0LWtleS1ieXRlcw==", "from": "x"}
	req.Module = &Module{Name: "dps", Digest: "sha256:abc"}
	if _, err := e.Decide(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decide(ctx, in(1000, "keyd", "load", "key:other")); err != nil {
		t.Fatal(err)
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	lines := buf.lines()
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, secret := range []string{secretToken, "c2VjcmV0LWtleS1ieXRlcw=="} {
		if strings.Contains(buf.buf.String(), secret) {
			t.Fatalf("the log holds a details value: %s", buf.buf.String())
		}
	}
	var first, second DecisionEntry
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line 1 is not JSON: %v\n%s", err, lines[0])
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line 2 is not JSON: %v\n%s", err, lines[1])
	}
	if first.Result != "allow" || first.TokenID != "tok-1" || first.Caller.UID != 2000 ||
		first.Action.Service != "keyd" || first.Action.Resource != "key:device-id" ||
		strings.Join(first.Action.DetailsKeys, ",") != "from,keyBytes,token" ||
		first.Module == nil || first.Module.Name != "dps" || first.Revision != e.Revision() ||
		len(first.Reasons) == 0 || first.Time.IsZero() || first.LatencyUS < 0 {
		t.Fatalf("entry 1: %+v", first)
	}
	if second.Result != "deny" || second.TokenID != "" || !strings.Contains(strings.Join(second.Reasons, ";"), "no principal whose keys match other") {
		t.Fatalf("entry 2: %+v", second)
	}
}

func TestDecisionLogConcurrentRecordsAllLand(t *testing.T) {
	buf := &syncBuffer{}
	dl := NewDecisionLog(buf, DecisionLogOptions{BufferSize: 16, Logger: quietLogger()})
	const goroutines, each = 32, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e := DecisionEntry{Result: "allow", Reasons: []string{fmt.Sprintf("g%d-%d", g, i)}}
				if err := dl.Record(e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(buf.buf.Bytes()))
	for sc.Scan() {
		var e DecisionEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not JSON: %v: %s", err, sc.Text())
		}
		seen[e.Reasons[0]] = true
	}
	if len(seen) != goroutines*each {
		t.Fatalf("%d distinct entries landed, want %d", len(seen), goroutines*each)
	}
	if buf.writes >= goroutines*each {
		t.Fatalf("%d writes for %d entries: not batched", buf.writes, goroutines*each)
	}
	t.Logf("%d entries in %d writes", goroutines*each, buf.writes)
	if err := dl.Record(DecisionEntry{}); err != nil {
		t.Fatalf("a fail-open log returned %v after Close", err)
	}
}

func TestDecisionLogFailClosed(t *testing.T) {
	w := &failingWriter{err: errors.New("disk full")}
	dl := NewDecisionLog(w, DecisionLogOptions{FailClosed: true, Logger: quietLogger()})
	if err := dl.Record(DecisionEntry{Result: "allow"}); err != nil {
		t.Fatalf("first record (no write failed yet): %v", err)
	}
	waitFor(t, func() bool { return dl.Err() != nil })
	err := dl.Record(DecisionEntry{Result: "allow"})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Record after a failed write: %v", err)
	}
	// Writes succeed again: the log recovers with the next batch.
	w.set(nil)
	_ = dl.Record(DecisionEntry{Result: "allow"}) // this one still reports the old failure
	waitFor(t, func() bool { return dl.Err() == nil })
	if err := dl.Record(DecisionEntry{Result: "allow"}); err != nil {
		t.Fatalf("Record after recovery: %v", err)
	}
	if err := dl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := dl.Record(DecisionEntry{}); !errors.Is(err, ErrDecisionLogClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
}

func TestDecisionLogFailOpenDrops(t *testing.T) {
	w := &failingWriter{err: errors.New("disk full")}
	dl := NewDecisionLog(w, DecisionLogOptions{Logger: quietLogger()})
	for range 10 {
		if err := dl.Record(DecisionEntry{Result: "allow"}); err != nil {
			t.Fatalf("fail-open Record: %v", err)
		}
	}
	waitFor(t, func() bool { return dl.Err() != nil })
	if err := dl.Close(); err == nil {
		t.Fatal("Close after failed writes returned nil")
	}
}

// Record blocks while the buffer is full (back-pressure), and resumes.
func TestDecisionLogBackPressure(t *testing.T) {
	const total = 100
	w := &gatedWriter{gate: make(chan struct{})}
	dl := NewDecisionLog(w, DecisionLogOptions{BufferSize: 2, Logger: quietLogger()})
	var recorded atomic.Int32
	go func() {
		for range total {
			_ = dl.Record(DecisionEntry{Result: "allow"})
			recorded.Add(1)
		}
	}()
	// The writer is stuck in Write and the buffer is full: Record blocks.
	waitFor(t, func() bool { return w.entered.Load() && len(dl.ch) == cap(dl.ch) })
	if n := recorded.Load(); n >= total {
		t.Fatalf("all %d records went through a blocked writer with a buffer of 2", n)
	}
	close(w.gate)
	waitFor(t, func() bool { return recorded.Load() == total })
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	if w.lines.Load() != total {
		t.Fatalf("%d lines written, want %d", w.lines.Load(), total)
	}
}

type gatedWriter struct {
	gate    chan struct{}
	entered atomic.Bool
	lines   atomic.Int32
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.entered.Store(true)
	<-w.gate
	w.lines.Add(int32(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

func TestDecisionLogFlushInterval(t *testing.T) {
	buf := &syncBuffer{}
	dl := NewDecisionLog(buf, DecisionLogOptions{FlushInterval: 100 * time.Millisecond, Logger: quietLogger()})
	for range 5 {
		_ = dl.Record(DecisionEntry{Result: "allow"})
	}
	waitFor(t, func() bool { buf.mu.Lock(); defer buf.mu.Unlock(); return buf.writes > 0 })
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	if len(buf.lines()) != 5 {
		t.Fatalf("%d lines", len(buf.lines()))
	}
}

func TestOpenDecisionLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	for round := range 2 { // the second open appends
		dl, err := OpenDecisionLog(path, DecisionLogOptions{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := dl.Record(DecisionEntry{Result: "allow", Reasons: []string{fmt.Sprint(round)}}); err != nil {
			t.Fatal(err)
		}
		if err := dl.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte{'\n'}); n != 2 {
		t.Fatalf("%d lines after two opens, want 2 (append):\n%s", n, b)
	}
	if _, err := OpenDecisionLog(filepath.Join(t.TempDir(), "no", "such", "dir.log"), DecisionLogOptions{}); err == nil {
		t.Fatal("opened a log in a missing dir")
	}
}
