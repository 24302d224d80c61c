package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// Handler runs one job: job is the job's JSON document; the returned value
// is marshalled as the job's result. Returning an *Error sets the error's
// code; any other error gets CodeModule.
type Handler func(ctx context.Context, job json.RawMessage) (any, error)

// Caller carries host calls: op is a host call name (Op*), req and the
// returned bytes are its JSON request and response. A refusal or failure
// is returned as an *Error. In a WASM module the caller is the import
// warden.call; natively it is whatever Invoke was given.
type Caller interface {
	Call(ctx context.Context, op string, req []byte) ([]byte, error)
}

type callerKey struct{}

// WithCaller returns a context whose host calls go to c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerFrom returns the context's caller, else the build's default (the
// WASM imports under wasip1; none natively).
func callerFrom(ctx context.Context) Caller {
	if c, ok := ctx.Value(callerKey{}).(Caller); ok && c != nil {
		return c
	}
	return defaultCaller
}

// ErrNoHost is the error of a host call made natively outside Invoke.
var ErrNoHost = &Error{Code: CodeUnavailable, Message: "no host: run the module under the Warden host, or through guest.Invoke"}

// noHost is the native build's default caller.
type noHost struct{}

// Call fails: there is no host.
func (noHost) Call(context.Context, string, []byte) ([]byte, error) { return nil, ErrNoHost }

// Run is a module's main: it reads the job from standard input, runs h,
// and writes the Envelope on standard output. In a module (GOOS=wasip1)
// host calls go to the warden imports; built natively there is no host and
// every host call fails with ErrNoHost (use Invoke to give it one). The
// handler's errors are in the envelope: the exit status is 0 unless the job
// could not be read or the result written.
func Run(h Handler) {
	job, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "guest: read the job:", err)
		os.Exit(1)
	}
	out := encodeEnvelope(execute(context.Background(), h, job))
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, "guest: write the result:", err)
		os.Exit(1)
	}
}

// Invoke runs h on job in-process with its host calls going to c, and
// returns the result as JSON, or the handler's error as an *Error. It is
// how a module's source runs natively (tests, benchmarks), and what Run
// does inside a module.
func Invoke(ctx context.Context, c Caller, h Handler, job json.RawMessage) (json.RawMessage, error) {
	env := execute(WithCaller(ctx, c), h, job)
	if env.Error != nil {
		return nil, env.Error
	}
	return env.Result, nil
}

// execute runs h and returns its envelope; a panic becomes CodePanic.
func execute(ctx context.Context, h Handler, job json.RawMessage) (env Envelope) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n%s", r, debug.Stack())
			env = Envelope{Error: &Error{Code: CodePanic, Message: fmt.Sprint(r)}}
		}
	}()
	if len(job) == 0 {
		job = json.RawMessage("null")
	}
	v, err := h(ctx, job)
	if err != nil {
		return Envelope{Error: AsError(err)}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return Envelope{Error: &Error{Code: CodeModule, Message: "marshal the result: " + err.Error()}}
	}
	return Envelope{Result: b}
}

// AsError returns err as an *Error: itself or the *Error it wraps (keeping
// the outer message), else CodeModule with err's message.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		if e.Error() == err.Error() {
			return e
		}
		return &Error{Code: e.Code, Message: err.Error()}
	}
	return &Error{Code: CodeModule, Message: err.Error()}
}

// encodeEnvelope marshals env; it cannot fail for the envelope's types.
func encodeEnvelope(env Envelope) []byte {
	b, err := json.Marshal(env)
	if err != nil {
		b, _ = json.Marshal(Envelope{Error: &Error{Code: CodeModule, Message: "marshal the envelope: " + err.Error()}})
	}
	return b
}
