package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero/api"

	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// job is the state of one running job, shared by its host calls.
type job struct {
	h        *Host
	m        *module
	log      *slog.Logger
	deadline time.Time

	calls   atomic.Int64
	logLeft atomic.Int64 // bytes the job may still log
	logCut  atomic.Bool  // the "log truncated" line was written

	pending []byte // the response of the last wasm call, until taken

	failMu sync.Mutex
	fail   *JobError // a limit hit or abuse that ends the job

	tmu        sync.Mutex
	transports map[[sha256.Size]byte]*http.Transport
}

type jobKey struct{}

func newJob(h *Host, m *module, deadline time.Time) *job {
	j := &job{h: h, m: m, deadline: deadline, log: h.log.With("module", m.name, "digest", shortDigest(m.digest))}
	j.logLeft.Store(int64(m.limits.MaxLogBytes))
	return j
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// close releases what the job's host calls opened.
func (j *job) close() {
	j.tmu.Lock()
	defer j.tmu.Unlock()
	for _, t := range j.transports {
		t.CloseIdleConnections()
	}
	j.transports = nil
}

// setFail records why the job must end, a job kind and its detail (the
// first reason wins), and returns the recorded one.
func (j *job) setFail(kind, detail error) *JobError {
	j.failMu.Lock()
	defer j.failMu.Unlock()
	if j.fail == nil {
		j.fail = &JobError{Module: j.m.name, Digest: j.m.digest, Kind: kind, Err: detail}
	}
	return j.fail
}

// failure returns the recorded reason, or nil.
func (j *job) failure() *JobError {
	j.failMu.Lock()
	defer j.failMu.Unlock()
	return j.fail
}

// wasmCall is warden.call(op_ptr, op_len, req_ptr, req_len) -> status<<32 | n.
func wasmCall(ctx context.Context, mod api.Module, stack []uint64) {
	j, _ := ctx.Value(jobKey{}).(*job)
	if j == nil {
		panic(errors.New("warden.call outside a job"))
	}
	mem := mod.Memory()
	opb, ok1 := mem.Read(uint32(stack[0]), uint32(stack[1]))
	req, ok2 := mem.Read(uint32(stack[2]), uint32(stack[3]))
	if !ok1 || !ok2 || len(opb) > 64 {
		panic(j.setFail(ErrTrap, errors.New("warden.call with a request outside the module's memory")))
	}
	resp, gerr := j.dispatch(ctx, string(opb), req)
	if f := j.failure(); f != nil {
		// wazero unwinds the guest with this error; run reports j.fail.
		panic(f)
	}
	status := uint64(0)
	if gerr != nil {
		status = 1
		resp, _ = json.Marshal(gerr)
	}
	j.pending = resp
	stack[0] = status<<32 | uint64(len(resp))
}

// wasmTake is warden.take(ptr, len) -> copied: it copies the pending
// response into the guest and discards it.
func wasmTake(ctx context.Context, mod api.Module, stack []uint64) {
	j, _ := ctx.Value(jobKey{}).(*job)
	if j == nil {
		panic(errors.New("warden.take outside a job"))
	}
	n := min(uint32(stack[1]), uint32(len(j.pending)))
	if n > 0 && !mod.Memory().Write(uint32(stack[0]), j.pending[:n]) {
		panic(j.setFail(ErrTrap, errors.New("warden.take into a buffer outside the module's memory")))
	}
	j.pending = nil
	stack[0] = uint64(n)
}

// nativeCaller carries a natively run handler's host calls to the job.
type nativeCaller struct{ j *job }

// Call dispatches a native handler's host call as the module's.
func (c nativeCaller) Call(ctx context.Context, op string, req []byte) ([]byte, error) {
	resp, gerr := c.j.dispatch(ctx, op, req)
	if f := c.j.failure(); f != nil {
		return nil, &guest.Error{Code: guest.CodeDenied, Message: f.Error()}
	}
	if gerr != nil {
		return nil, gerr
	}
	return resp, nil
}

// handlers maps each host call to its implementation.
var handlers = map[string]func(j *job, ctx context.Context, req []byte) ([]byte, *guest.Error){
	guest.OpHTTPDo:            (*job).httpDo,
	guest.OpKeysSign:          (*job).keysSign,
	guest.OpKeysCreateKeyPair: (*job).keysCreateKeyPair,
	guest.OpKeysPublic:        (*job).keysPublic,
	guest.OpKeysHMAC:          (*job).keysHMAC,
	guest.OpCertsGet:          (*job).certsGet,
	guest.OpCertsPut:          (*job).certsPut,
	guest.OpTPMKeys:           (*job).tpmKeys,
	guest.OpTPMImportAuthKey:  (*job).tpmImportAuthKey,
	guest.OpTPMSign:           (*job).tpmSign,
	guest.OpClockSleep:        (*job).clockSleep,
	guest.OpLog:               (*job).logLine,
}

// dispatch counts the call against the job's limit and runs it.
func (j *job) dispatch(ctx context.Context, op string, req []byte) ([]byte, *guest.Error) {
	if n := j.calls.Add(1); n > int64(j.m.limits.MaxHostCalls) {
		f := j.setFail(ErrHostCallLimit, fmt.Errorf("call %d (%s) is over the limit of %d", n, op, j.m.limits.MaxHostCalls))
		return nil, &guest.Error{Code: guest.CodeDenied, Message: f.Error()}
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}
	fn, ok := handlers[op]
	if !ok {
		return nil, guest.Errorf(guest.CodeInvalid, "unknown host call %q", op)
	}
	return fn(j, ctx, req)
}

// decode unmarshals a host call's request.
func decode(op string, req []byte, v any) *guest.Error {
	if err := json.Unmarshal(req, v); err != nil {
		return guest.Errorf(guest.CodeInvalid, "%s: request: %v", op, err)
	}
	return nil
}

// encode marshals a host call's response.
func encode(op string, v any) ([]byte, *guest.Error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, guest.Errorf(guest.CodeFailed, "%s: response: %v", op, err)
	}
	return b, nil
}

// authorize asks the policy whether the module may do op on resource.
// A refusal is logged (and recorded in the decision log by the Decider).
func (j *job) authorize(ctx context.Context, op, resource string, details map[string]any) *guest.Error {
	if id, ok := strings.CutPrefix(resource, "key:"); ok && slices.Contains(j.h.opts.ReservedKeys, id) {
		j.emit(ctx, slog.LevelWarn, "host call on a reserved key refused", slog.String("op", op), slog.String("resource", resource))
		return guest.Errorf(guest.CodeDenied, "%s on %s: the key is reserved for the broker", op, resource)
	}
	d := j.h.opts.Decider
	if d == nil {
		return guest.Errorf(guest.CodeDenied, "%s on %s: no policy is configured for module host calls", op, resource)
	}
	in := policy.Input{
		Caller: j.h.opts.Caller,
		Action: policy.Action{Service: "modules", Operation: op, Resource: resource, Details: details},
		Module: &policy.Module{Name: j.m.name, Digest: j.m.digest},
		Time:   time.Now().UTC(),
	}
	// Both failures are logged within the job's log budget (the decision
	// log, if any, has each one): the module chooses the resource and how
	// often it asks.
	dec, err := d.Decide(ctx, &in)
	if err != nil {
		j.emit(ctx, slog.LevelError, "host call: no policy decision",
			slog.String("op", op), slog.String("resource", resource), slog.Any("err", err))
		return guest.Errorf(guest.CodeDenied, "%s on %s: no policy decision: %v", op, resource, err)
	}
	if !dec.Allow {
		j.emit(ctx, slog.LevelWarn, "host call denied by policy",
			slog.String("op", op), slog.String("resource", resource), slog.Any("reasons", dec.Reasons))
		return guest.Errorf(guest.CodeDenied, "%s on %s denied by policy: %s", op, resource, strings.Join(dec.Reasons, "; "))
	}
	return nil
}

// ctxError maps a done context to the module's error.
func ctxError(err error) *guest.Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return guest.Errorf(guest.CodeDeadline, "the job's deadline has passed")
	}
	return guest.Errorf(guest.CodeDeadline, "the job was canceled")
}

// lineCost is what a log line costs the job's log budget besides its
// message and attributes: about what the host writes around them (time,
// level, module, digest). Without it an empty line was free, and a module
// logged many times its budget in bare newlines or empty log calls.
const lineCost = 64

// emit logs one line of the job (the module's, or the host's about a host
// call it refused) within the job's log budget; when the budget runs out
// one "truncated" line is written and the rest dropped.
func (j *job) emit(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	n := lineCost + int64(len(msg))
	for _, a := range attrs {
		n += int64(len(a.Key) + len(a.Value.String()))
	}
	if j.logLeft.Add(-n) < 0 {
		if j.logCut.CompareAndSwap(false, true) {
			j.log.Warn("module log truncated: the job's log limit is reached", "max_log_bytes", j.m.limits.MaxLogBytes)
		}
		return
	}
	j.log.LogAttrs(ctx, level, msg, attrs...)
}

// stderrWriter turns the module's standard error into log lines (at most
// 4 KiB each, within the job's log budget) and notices the Go runtime's
// "out of memory" report.
type stderrWriter struct {
	j   *job
	buf []byte
	oom bool
}

const maxLineBytes = 4 << 10

// clip cuts s to at most n bytes, at a character boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Write logs each complete line of p.
func (w *stderrWriter) Write(p []byte) (int, error) {
	if !w.oom && bytes.Contains(w.tail(p), []byte("out of memory")) {
		w.oom = true
	}
	w.buf = append(w.buf, p...)
	for {
		// Not strings.IndexByte(string(w.buf)): that copied the rest of
		// the buffer for each line, quadratic in a write of many lines
		// (hours for a module's 4 MiB of newlines, past any deadline).
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > maxLineBytes {
				w.line(w.buf[:maxLineBytes])
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.line(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// tail is the end of the buffered text plus p, enough to find a phrase
// split across writes.
func (w *stderrWriter) tail(p []byte) []byte {
	k := max(0, len(w.buf)-32)
	return append(append([]byte(nil), w.buf[k:]...), p...)
}

func (w *stderrWriter) line(b []byte) {
	if len(b) > maxLineBytes {
		b = b[:maxLineBytes]
	}
	w.j.emit(context.Background(), slog.LevelInfo, "module stderr", slog.String("line", string(b)))
}

func (w *stderrWriter) flush() {
	if len(w.buf) > 0 {
		w.line(w.buf)
		w.buf = nil
	}
}

// stdoutBuffer keeps the module's standard output up to max bytes; a write
// beyond fails and marks the output over the limit.
type stdoutBuffer struct {
	max  int
	buf  []byte
	over bool
}

// Write keeps p, or fails once the output would pass the limit.
func (b *stdoutBuffer) Write(p []byte) (int, error) {
	if len(b.buf)+len(p) > b.max {
		b.over = true
		return 0, ErrOutputLimit
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}
