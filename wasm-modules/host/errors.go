package host

import (
	"errors"
	"fmt"
)

// Errors of Load and Run. A failed job's error is a *JobError that wraps one
// of the job kinds (ErrDeadline … ErrCanceled): test with errors.Is.
var (
	// ErrClosed: the host was closed.
	ErrClosed = errors.New("module host closed")
	// ErrUnknownModule: no module of that name is configured.
	ErrUnknownModule = errors.New("no such module")
	// ErrUnavailable: the module is configured but no version is loaded
	// (it was refused: see its load error, which the error wraps).
	ErrUnavailable = errors.New("module unavailable")
	// ErrIntegrity: the file's digest or signature does not match its
	// configuration; the module is refused.
	ErrIntegrity = errors.New("module integrity check failed")

	// ErrDeadline: the job ran past its wall-clock limit.
	ErrDeadline = errors.New("job deadline exceeded")
	// ErrMemoryLimit: the instance hit its memory cap.
	ErrMemoryLimit = errors.New("memory limit exceeded")
	// ErrHostCallLimit: the job made more host calls than allowed.
	ErrHostCallLimit = errors.New("host-call limit exceeded")
	// ErrOutputLimit: the result was larger than allowed.
	ErrOutputLimit = errors.New("output limit exceeded")
	// ErrTrap: the module trapped (a WASM runtime error, or a host call
	// with memory references outside the module's memory).
	ErrTrap = errors.New("module trapped")
	// ErrExit: the module exited with a non-zero status.
	ErrExit = errors.New("module exited with an error status")
	// ErrModuleError: the module's handler returned an error; the
	// *guest.Error it returned is wrapped too (errors.As).
	ErrModuleError = errors.New("module returned an error")
	// ErrBadOutput: standard output is not a result envelope.
	ErrBadOutput = errors.New("module output is not a result envelope")
	// ErrCanceled: the caller canceled the job's context.
	ErrCanceled = errors.New("job canceled")
)

// jobKinds names each job failure kind, for JobRecord.Kind and logs.
var jobKinds = []struct {
	err  error
	name string
}{
	{ErrDeadline, "deadline"},
	{ErrMemoryLimit, "memory"},
	{ErrHostCallLimit, "host_calls"},
	{ErrOutputLimit, "output"},
	{ErrTrap, "trap"},
	{ErrExit, "exit"},
	{ErrModuleError, "module"},
	{ErrBadOutput, "bad_output"},
	{ErrCanceled, "canceled"},
	{ErrUnavailable, "unavailable"},
	{ErrUnknownModule, "unknown"},
	{ErrClosed, "closed"},
}

// Kind names the kind of a Run error: "deadline", "memory", "host_calls",
// "output", "trap", "exit", "module", "bad_output", "canceled",
// "unavailable", "unknown", "closed"; "" for nil, "error" otherwise.
func Kind(err error) string {
	if err == nil {
		return ""
	}
	for _, k := range jobKinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "error"
}

// JobError is the error of a job that ran and failed.
type JobError struct {
	// Module and Digest identify the version that ran the job.
	Module string
	Digest string
	// Kind is one of the job kinds: ErrDeadline, ErrMemoryLimit, …
	Kind error
	// Err is the detail: the wazero error, the module's *guest.Error, …
	Err error
}

// Error says which module failed, how, and why.
func (e *JobError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("module %s (%s): %v", e.Module, shortDigest(e.Digest), e.Kind)
	}
	return fmt.Sprintf("module %s (%s): %v: %v", e.Module, shortDigest(e.Digest), e.Kind, e.Err)
}

// Unwrap returns Kind and Err.
func (e *JobError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
