package host

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

func TestJobRoundTrip(t *testing.T) {
	f := newFixture(t, nil, nil)
	res, err := f.h.Run(context.Background(), "probe", steps(
		map[string]any{"op": "version"},
		call(guest.OpLog, guest.LogRequest{Level: "warn", Msg: "hello from probe", Attrs: map[string]any{"n": 1}}),
		call(guest.OpCertsPut, guest.CertPutRequest{CertID: "c1", PEM: "PEM"}),
		call(guest.OpCertsGet, guest.CertRequest{CertID: "c1"}),
		call(guest.OpCertsGet, guest.CertRequest{CertID: "missing"}),
		call(guest.OpKeysSign, guest.SignRequest{KeyID: "k", Digest: []byte{1}}),
		call("nope.nope", nil),
	))
	if err != nil {
		t.Fatal(err)
	}
	p := parseProbe(t, res)
	if p.Version != "v1" || len(p.Steps) != 7 || res.HostCalls != 6 {
		t.Fatalf("result %s, host calls %d", res.Output, res.HostCalls)
	}
	var cert guest.CertResponse
	json.Unmarshal(p.Steps[3].Resp, &cert)
	if cert.PEM != "PEM" {
		t.Fatalf("certs.get = %s", p.Steps[3].Resp)
	}
	for i, code := range map[int]string{4: guest.CodeNotFound, 5: guest.CodeUnavailable, 6: guest.CodeInvalid} {
		if e := p.Steps[i].Error; e == nil || e.Code != code {
			t.Errorf("step %d error = %+v, want code %s", i, e, code)
		}
	}
	if !strings.Contains(f.logs.String(), "hello from probe") || !strings.Contains(f.logs.String(), "attrs.n=1") {
		t.Errorf("log line missing:\n%s", f.logs)
	}
	for _, in := range f.dec.inputs {
		if in.Module == nil || in.Module.Name != "probe" || in.Module.Digest != "sha256:"+f.cfg.SHA256 || in.Action.Service != "modules" {
			t.Errorf("decision input %+v", in)
		}
	}
	if got := strings.Join(f.dec.ops(), ","); got != "certs.put cert:c1,certs.get cert:c1,certs.get cert:missing" {
		t.Errorf("decisions = %s", got)
	}
	st, _ := f.h.Module("probe")
	if st.Jobs != 1 || st.LastJob == nil || !st.LastJob.OK || st.LastJob.HostCalls != 6 || st.Digest != "sha256:"+f.cfg.SHA256 {
		t.Errorf("status %+v", st)
	}
}

// TestHostileModules runs each hostile behaviour, checks the job fails as
// it should, and that the host then still runs a good job.
func TestHostileModules(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) {
		c.Limits = Limits{MemoryMB: 32, Timeout: time.Second, MaxHostCalls: 50, MaxOutputBytes: 4096, MaxLogBytes: 2048}
	}, nil)
	tests := []struct {
		name string
		job  []byte
		kind error
		code string // the module's error code, for ErrModuleError
		msg  string
	}{
		{"infinite loop", steps(map[string]any{"op": "loop"}), ErrDeadline, "", "stopped after"},
		{"memory bomb", steps(map[string]any{"op": "alloc"}), ErrMemoryLimit, "", "32 MiB cap"},
		{"trap", steps(map[string]any{"op": "trap"}), ErrTrap, "", "out of bounds memory access"},
		{"exit status", steps(map[string]any{"op": "exit", "n": 3}), ErrExit, "", "exit status 3"},
		{"goroutine panic", steps(map[string]any{"op": "gopanic"}), ErrExit, "", "exit status 2"},
		{"recovered panic", steps(map[string]any{"op": "panic"}), ErrModuleError, guest.CodePanic, "probe panic"},
		{"module error", steps(map[string]any{"op": "fail"}), ErrModuleError, "probe_failed", "failed as asked"},
		{"output bomb", steps(map[string]any{"op": "output", "n": 100000}), ErrOutputLimit, "", "4096 bytes"},
		{"bad pointer", steps(map[string]any{"op": "badptr"}), ErrTrap, "", "outside the module's memory"},
		{"host call flood", steps(map[string]any{"op": "spin"}), ErrHostCallLimit, "", "limit of 50"},
		{"not JSON", []byte("{"), ErrModuleError, "bad_job", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := f.h.Run(context.Background(), "probe", tc.job)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			var je *JobError
			if !errors.As(err, &je) || je.Module != "probe" || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want a JobError mentioning %q", err, tc.msg)
			}
			if tc.code != "" {
				var ge *guest.Error
				if !errors.As(err, &ge) || ge.Code != tc.code {
					t.Fatalf("err = %v, want module code %s", err, tc.code)
				}
			}
			t.Logf("%v", err)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
			res, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "version"}))
			if err != nil || parseProbe(t, res).Version != "v1" {
				t.Fatalf("the host does not serve after %s: %v", tc.name, err)
			}
		})
	}
	st, _ := f.h.Module("probe")
	if st.Failures != uint64(len(tests)) || st.Running != 0 {
		t.Errorf("status %+v", st)
	}
}

// trapModule is a WASI command, assembled by hand, whose memory starts
// at pages 64 KiB pages and whose _start traps (unreachable): a module
// that filled its memory and then failed.
func trapModule(pages uint32) []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, 1, 4, 1, 0x60, 0, 0) // type section: func () -> ()
	b = append(b, 3, 2, 1, 0)          // function section: func 0 of type 0
	mem := binary.AppendUvarint([]byte{1, 0}, uint64(pages))
	b = append(append(b, 5, byte(len(mem))), mem...) // memory section: min pages, no max
	b = append(b, 7, 19, 2, 6, '_', 's', 't', 'a', 'r', 't', 0, 0, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0)
	return append(b, 10, 5, 1, 3, 0, 0x00, 0x0b) // code section: unreachable
}

// TestMemoryCapTrap: a module that traps with its memory far from the cap
// fails as a trap, not as a memory-limit failure.
func TestMemoryCapTrap(t *testing.T) {
	h, err := loadBinary(t, "trap", trapModule(1), Limits{MemoryMB: 64, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = h.Run(context.Background(), "trap", []byte("{}")); !errors.Is(err, ErrTrap) {
		t.Fatalf("err = %v, want %v", err, ErrTrap)
	}
}

// loadBinary loads bin, a module assembled by the test, as module name
// with limits on a host of its own (closed at the test's end) and returns
// the host and Load's error.
func loadBinary(t *testing.T, name string, bin []byte, limits Limits) (*Host, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".wasm")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Decider: &decider{deny: map[string]bool{}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	sum := sha256.Sum256(bin)
	return h, h.Load(context.Background(), []ModuleConfig{{Name: name, Path: path, SHA256: hex.EncodeToString(sum[:]), Limits: limits}})
}

// pagesMemory is a linear memory of a given number of pages, with Size
// as wazero has it: a uint32 that wraps to 0 at 65536 pages.
type pagesMemory struct {
	api.Memory
	pages uint32
}

func (m pagesMemory) Size() uint32                     { return m.pages << 16 }
func (m pagesMemory) Grow(delta uint32) (uint32, bool) { return m.pages, delta == 0 }

// TestMemoryBytes: the memory's size is right up to wasm32's whole 4 GiB
// (memory_limit_mb = 4096), where Size() reads 0, so that a trap at the
// cap is taken for what it is.
func TestMemoryBytes(t *testing.T) {
	for _, pages := range []uint32{0, 1, 65535, 65536} {
		got := memoryBytes(pagesMemory{pages: pages})
		if want := uint64(pages) * 65536; got != want {
			t.Errorf("%d pages: %d bytes, want %d", pages, got, want)
		}
	}
	if !memoryExhausted(memoryBytes(pagesMemory{pages: 65536}), 4096) {
		t.Error("a full 4 GiB memory under a 4096 MB cap is not exhausted")
	}
}

func TestDeadlineIsPrompt(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.Timeout = 300 * time.Millisecond }, nil)
	start := time.Now()
	_, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "loop"}))
	if d := time.Since(start); !errors.Is(err, ErrDeadline) || d > 2*time.Second {
		t.Fatalf("err = %v after %v", err, d)
	}
	// The caller's context bounds the job too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = f.h.Run(ctx, "probe", steps(map[string]any{"op": "loop"}))
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("caller deadline: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = f.h.Run(ctx, "probe", steps(map[string]any{"op": "loop"}))
	if !errors.Is(err, ErrCanceled) || Kind(err) != "canceled" {
		t.Fatalf("caller cancel: %v", err)
	}
}

// TestGuestTimeSleep: time.Sleep inside a module really sleeps, and the
// deadline interrupts it.
func TestGuestTimeSleep(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.Timeout = time.Second }, nil)
	start := time.Now()
	if _, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "gosleep", "n": 200})); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 900*time.Millisecond {
		t.Fatalf("a 200 ms time.Sleep took %v", d)
	}
	start = time.Now()
	_, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "gosleep", "n": 60000}))
	if d := time.Since(start); !errors.Is(err, ErrDeadline) || d > 1500*time.Millisecond {
		t.Fatalf("a long time.Sleep: %v after %v", err, d)
	}
}

func TestLogIsCapped(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.MaxLogBytes = 2000 }, nil)
	if _, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "stderr", "n": 5000})); err != nil {
		t.Fatal(err)
	}
	logs := f.logs.String()
	n := strings.Count(logs, "probe stderr line")
	if n == 0 || n > 100 || strings.Count(logs, "module log truncated") != 1 {
		t.Fatalf("%d stderr lines logged:\n%.2000s", n, logs)
	}
}

func TestClockSleep(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) {
		c.Limits.Timeout = 2 * time.Second
		c.Limits.MaxSleep = time.Second
	}, nil)
	start := time.Now()
	res, err := f.h.Run(context.Background(), "probe", steps(
		call(guest.OpClockSleep, guest.SleepRequest{Milliseconds: 100}),
		call(guest.OpClockSleep, guest.SleepRequest{Milliseconds: 1500}),
		call(guest.OpClockSleep, guest.SleepRequest{Milliseconds: 900}),
		call(guest.OpClockSleep, guest.SleepRequest{Milliseconds: 1000}),
	))
	if err != nil {
		t.Fatal(err)
	}
	p := parseProbe(t, res)
	if p.Steps[0].Error != nil {
		t.Errorf("100 ms: %v", p.Steps[0].Error)
	}
	if e := p.Steps[1].Error; e == nil || e.Code != guest.CodeInvalid {
		t.Errorf("over MaxSleep: %+v", e)
	}
	if p.Steps[2].Error != nil {
		t.Errorf("900 ms: %v", p.Steps[2].Error)
	}
	if e := p.Steps[3].Error; e == nil || e.Code != guest.CodeDeadline {
		t.Errorf("past the deadline: %+v", e)
	}
	if d := time.Since(start); d < time.Second || d > 1900*time.Millisecond {
		t.Errorf("took %v, want the two sleeps only", d)
	}
}

func TestUnknownAndClosed(t *testing.T) {
	f := newFixture(t, nil, nil)
	if _, err := f.h.Run(context.Background(), "nope", nil); !errors.Is(err, ErrUnknownModule) {
		t.Fatalf("unknown: %v", err)
	}
	f.h.Close(context.Background())
	if _, err := f.h.Run(context.Background(), "probe", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
	if err := f.h.Load(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
}

func TestConcurrentJobs(t *testing.T) {
	f := newFixture(t, nil, nil)
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "version"}, call(guest.OpLog, guest.LogRequest{Msg: "x"})))
			errc <- err
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := f.h.Module("probe"); st.Jobs != 8 || st.Running != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestEmptyLogLinesAreCapped: a log line costs the job's log budget what
// the host writes for it, not only its message: empty lines on stderr, or
// log calls with an empty message, were free (or nearly), and a module
// wrote several times its budget in the host's time, level, module and
// digest fields.
func TestEmptyLogLinesAreCapped(t *testing.T) {
	const budget = 2000
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.MaxLogBytes = budget }, nil)
	logged := func(job []byte) int {
		t.Helper()
		start := len(f.logs.String())
		if _, err := f.h.Run(context.Background(), "probe", job); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range strings.SplitAfter(f.logs.String()[start:], "\n") {
			if !strings.Contains(l, "module log truncated") && !strings.Contains(l, "module job done") {
				n += len(l)
			}
		}
		return n
	}
	if n := logged(steps(map[string]any{"op": "newlines", "n": 100000})); n > 2*budget {
		t.Errorf("empty stderr lines: %d bytes of log for a %d-byte budget", n, budget)
	}
	var calls []map[string]any
	for range 500 {
		calls = append(calls, call(guest.OpLog, guest.LogRequest{}))
	}
	if n := logged(steps(calls...)); n > 2*budget {
		t.Errorf("empty log calls: %d bytes of log for a %d-byte budget", n, budget)
	}
}

// tableModule is a WASI command, assembled by hand, with a one-page memory
// and a function table of min entries, whose _start grows the table by
// grow entries (table.grow, of the reference-types proposal) or, for 0,
// does nothing.
func tableModule(min, grow uint32) []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, 1, 4, 1, 0x60, 0, 0) // type section: func () -> ()
	b = append(b, 3, 2, 1, 0)          // function section: func 0 of type 0
	tab := binary.AppendUvarint([]byte{1, 0x70, 0}, uint64(min))
	b = append(append(b, 4, byte(len(tab))), tab...) // table section: funcref, min, no max
	b = append(b, 5, 3, 1, 0, 1)                     // memory section: 1 page, no max
	b = append(b, 7, 19, 2, 6, '_', 's', 't', 'a', 'r', 't', 0, 0, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0)
	body := []byte{0, 0x0b} // no locals; end
	if grow > 0 {
		body = []byte{0, 0xd0, 0x70, 0x41} // no locals; ref.null func; i32.const grow
		body = appendSLEB(body, int64(grow))
		body = append(body, 0xfc, 0x0f, 0, 0x1a, 0x0b) // table.grow 0; drop; end
	}
	code := append([]byte{1, byte(len(body))}, body...)
	return append(append(b, 10, byte(len(code))), code...)
}

func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// TestTablesWithinMemoryLimit: a module's function tables live in the
// host's memory, outside the linear memory that memory_limit_mb caps: a
// table declared with 2^27 entries, or grown by table.grow, took the host
// a gigabyte per job (table.grow up to 2^32 entries: 32 GiB) under a
// 1 MiB cap. Such a module is refused, or its job fails; the host never
// allocates the table.
func TestTablesWithinMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		min, grow uint32
		refusal   string
	}{
		{"declared", 1 << 27, 0, "table of 134217728 entries"},
		{"grown", 0, 1 << 27, "reference-types"},
		{"small", 1 << 10, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := loadBinary(t, "table", tableModule(tc.min, tc.grow), Limits{MemoryMB: 1, Timeout: 10 * time.Second})
			if err != nil {
				if tc.refusal == "" || !strings.Contains(err.Error(), tc.refusal) {
					t.Fatalf("Load = %v, want refused for %q", err, tc.refusal)
				}
				return
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = h.Run(context.Background(), "table", []byte("{}"))
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<20 {
				t.Fatalf("a job under a 1 MiB memory cap allocated %d MiB in the host (err %v)", grown>>20, err)
			}
			if tc.refusal != "" {
				t.Fatalf("Run = %v: a module with a table too large for its memory limit ran", err)
			}
		})
	}
}

// TestStderrFloodIsPrompt: one large write of many lines on stderr is
// split in time linear in its size, and the job still ends at its
// deadline.
func TestStderrFloodIsPrompt(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.Timeout = 2 * time.Second }, nil)
	done := make(chan error, 1)
	go func() {
		_, err := f.h.Run(context.Background(), "probe", steps(map[string]any{"op": "newlines", "n": 4 << 20}))
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a 4 MiB write of newlines to stderr is still being logged, 10 s into a job with a 2 s timeout")
	}
}
