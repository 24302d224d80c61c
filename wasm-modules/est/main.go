// Command est is Warden's EST client (RFC 7030, clarified by RFC 8951) as a
// WASM provisioning module: certd gives it a job (package estjob) on
// standard input and it returns the enrolled certificates. It implements
// /cacerts, /simpleenroll and /simplereenroll with HTTP Basic and/or TLS
// client certificate authentication (the host does TLS with the key by
// store ID: the key never enters the module), aziot's bootstrap-identity
// flow, bounded waiting on 202 + Retry-After, and parses the server's
// PKCS#7 certs-only answers itself (package pkcs7), so untrusted network
// input is only ever parsed inside the sandbox.
//
// Build with GOOS=wasip1 GOARCH=wasm (make modules). The same source runs
// natively in-process through guest.Invoke / host.RunNative (tests and the
// benchmark).
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// version names the build (set with -ldflags "-X main.version=…"); it is
// sent as the User-Agent.
var version = "dev"

func main() { guest.Run(handle) }

// handle runs one EST job.
func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var job estjob.Job
	if err := json.Unmarshal(raw, &job); err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "decode the job: %v", err)
	}
	if job.URL == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "the job has no EST URL")
	}
	c := &client{job: &job, log: guest.Logger(ctx).With("url", job.URL)}
	switch job.Op {
	case estjob.OpCACerts:
		return c.caCertsOnly(ctx)
	case estjob.OpEnroll:
		return c.enroll(ctx)
	case estjob.OpReenroll:
		return c.reenroll(ctx)
	}
	return nil, guest.Errorf(guest.CodeInvalid, "unknown operation %q (want %q, %q or %q)", job.Op,
		estjob.OpEnroll, estjob.OpReenroll, estjob.OpCACerts)
}

// errorf returns a module error with code.
func errorf(code, format string, args ...any) error {
	return &guest.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
