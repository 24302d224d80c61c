package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// Result is the outcome of a job that succeeded.
type Result struct {
	// Module and Digest identify the version that ran the job.
	Module string
	Digest string
	// Output is the handler's result as JSON ("null" for nil).
	Output json.RawMessage
	// Duration is the job's wall-clock time, instantiation included.
	Duration time.Duration
	// HostCalls is how many host calls the job made.
	HostCalls int
}

// Run runs one job of module name in a fresh instance: input (JSON) is the
// module's standard input, and the handler's result is returned. The job
// ends at the module's timeout or when ctx is done, whichever comes first.
// A failed job returns a *JobError (errors.Is with ErrDeadline,
// ErrMemoryLimit, ErrHostCallLimit, ErrOutputLimit, ErrTrap, ErrExit,
// ErrModuleError, ErrBadOutput or ErrCanceled; errors.As *guest.Error for
// the module's own error); an unknown or refused module returns an error
// wrapping ErrUnknownModule or ErrUnavailable. The host keeps serving
// whatever the job did.
func (h *Host) Run(ctx context.Context, name string, input []byte) (*Result, error) {
	m, err := h.acquire(name)
	if err != nil {
		return nil, err
	}
	res, err := h.run(ctx, m, input)
	h.record(ctx, m, res, err, false)
	return res, err
}

// record logs a job's outcome and stores it as the module's last job.
func (h *Host) record(ctx context.Context, m *module, res *Result, err error, native bool) {
	rec := JobRecord{Time: time.Now().UTC(), Digest: m.digest, OK: err == nil, Kind: Kind(err), Native: native}
	if res != nil {
		rec.DurationMS = float64(res.Duration.Microseconds()) / 1000
		rec.HostCalls = res.HostCalls
	}
	if err != nil {
		rec.Error = err.Error()
		// A line's worth of the error: the module's own error message may
		// be as long as its output limit, and this line is outside its log
		// budget.
		h.log.Warn("module job failed", "module", m.name, "digest", shortDigest(m.digest), "kind", rec.Kind,
			"duration_ms", rec.DurationMS, "host_calls", rec.HostCalls, "err", clip(rec.Error, maxLineBytes))
	} else {
		h.log.Debug("module job done", "module", m.name, "digest", shortDigest(m.digest),
			"duration_ms", rec.DurationMS, "host_calls", rec.HostCalls, "native", native)
	}
	h.finish(ctx, m, rec)
}

func (h *Host) run(ctx context.Context, m *module, input []byte) (*Result, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.limits.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	j := newJob(h, m, deadline)
	defer j.close()
	stdout := &stdoutBuffer{max: m.limits.MaxOutputBytes}
	stderr := &stderrWriter{j: j}
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithArgs(m.name).
		WithStdin(bytes.NewReader(input)).
		WithStdout(stdout).
		WithStderr(stderr).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(func(ns int64) { sleepCtx(ctx, time.Duration(ns)) })
	mod, err := m.rt.InstantiateModule(context.WithValue(ctx, jobKey{}, j), m.compiled, cfg)
	stderr.flush()
	var memBytes uint64
	if mod != nil {
		if mem := mod.Memory(); mem != nil {
			memBytes = memoryBytes(mem)
		}
		// Always closed, and necessarily after a memory-cap trap (which
		// does not close the instance by itself).
		mod.Close(context.WithoutCancel(ctx))
	}
	res := &Result{Module: m.name, Digest: m.digest, Duration: time.Since(start), HostCalls: int(j.calls.Load())}
	fail := func(kind, detail error) (*Result, error) {
		return res, &JobError{Module: m.name, Digest: m.digest, Kind: kind, Err: detail}
	}
	if f := j.failure(); f != nil {
		return res, f
	}
	if err != nil {
		var exit *sys.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeDeadlineExceeded:
			return fail(ErrDeadline, fmt.Errorf("stopped after %v (timeout %v)", res.Duration.Round(time.Millisecond), m.limits.Timeout))
		case errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeContextCanceled:
			return fail(ErrCanceled, context.Canceled)
		case stdout.over:
			return fail(ErrOutputLimit, fmt.Errorf("more than %d bytes of output", m.limits.MaxOutputBytes))
		case stderr.oom || memoryExhausted(memBytes, m.limits.MemoryMB):
			return fail(ErrMemoryLimit, fmt.Errorf("the instance reached its %d MiB cap (%s)", m.limits.MemoryMB, firstLine(err)))
		case errors.As(err, &exit):
			return fail(ErrExit, fmt.Errorf("exit status %d", exit.ExitCode()))
		}
		return fail(ErrTrap, errors.New(firstLine(err)))
	}
	if stdout.over {
		return fail(ErrOutputLimit, fmt.Errorf("more than %d bytes of output", m.limits.MaxOutputBytes))
	}
	return decodeEnvelope(res, stdout.buf, fail)
}

// sleepCtx is the guest's nanosleep (time.Sleep in a module): a real
// sleep that ends early when the job's context is done, so that the
// deadline stops a sleeping module promptly.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// decodeEnvelope reads the module's output into res, or fails the job.
func decodeEnvelope(res *Result, out []byte, fail func(kind, detail error) (*Result, error)) (*Result, error) {
	var env guest.Envelope
	if err := json.Unmarshal(out, &env); err != nil {
		return fail(ErrBadOutput, fmt.Errorf("%d bytes: %w", len(out), err))
	}
	if env.Error != nil {
		return fail(ErrModuleError, env.Error)
	}
	if env.Result == nil {
		return fail(ErrBadOutput, errors.New("neither result nor error"))
	}
	res.Output = env.Result
	return res, nil
}

// memoryBytes is the size of a linear memory, counted in pages: Size() is
// a uint32 and wraps to 0 at wasm32's full 4 GiB (memory_limit_mb =
// 4096), which hid an exhausted memory behind a plain trap.
func memoryBytes(mem api.Memory) uint64 {
	pages, _ := mem.Grow(0)
	return uint64(pages) << 16
}

// memoryExhausted: the linear memory is within 1/16 of its cap, so a
// trap is taken to be the Go runtime failing to grow it.
func memoryExhausted(size uint64, capMB int) bool {
	limit := uint64(capMB) << 20
	return size >= limit-limit/16
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// RunNative runs handler, a module's own Go handler compiled into this
// process, as a job of module name: its host calls go through the same
// code, policy decisions, egress allowlist, host-call and output limits as
// the WASM module's, under the same deadline. It is for tests and for
// benchmarks that compare a module with its source built natively; the
// handler is trusted code (no memory cap, and one that ignores ctx keeps
// running after RunNative returns at the deadline). Errors are as for Run.
func (h *Host) RunNative(ctx context.Context, name string, handler guest.Handler, input []byte) (*Result, error) {
	m, err := h.acquire(name)
	if err != nil {
		return nil, err
	}
	res, err := h.runNative(ctx, m, handler, input)
	h.record(ctx, m, res, err, true)
	return res, err
}

func (h *Host) runNative(ctx context.Context, m *module, handler guest.Handler, input []byte) (*Result, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.limits.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	j := newJob(h, m, deadline)
	defer j.close()
	type outcome struct {
		out json.RawMessage
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		out, err := guest.Invoke(ctx, nativeCaller{j}, handler, json.RawMessage(input))
		done <- outcome{out, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
	}
	res := &Result{Module: m.name, Digest: m.digest, Duration: time.Since(start), HostCalls: int(j.calls.Load())}
	fail := func(kind, detail error) (*Result, error) {
		return res, &JobError{Module: m.name, Digest: m.digest, Kind: kind, Err: detail}
	}
	if f := j.failure(); f != nil {
		return res, f
	}
	if o.out == nil && o.err == nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return fail(ErrCanceled, context.Canceled)
		}
		return fail(ErrDeadline, fmt.Errorf("stopped after %v (timeout %v)", res.Duration.Round(time.Millisecond), m.limits.Timeout))
	}
	if o.err != nil {
		return fail(ErrModuleError, o.err)
	}
	if len(o.out) > m.limits.MaxOutputBytes {
		return fail(ErrOutputLimit, fmt.Errorf("more than %d bytes of output", m.limits.MaxOutputBytes))
	}
	res.Output = o.out
	return res, nil
}
