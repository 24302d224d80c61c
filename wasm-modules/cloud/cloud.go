// Package cloud holds what the DPS and IoT Hub modules share when they call
// Azure: sending a request with aziot's transport retries and a fresh
// Authorization header per attempt.
package cloud

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// SignError is a failure to sign a request's SAS token: the key store's
// error, not the network's.
type SignError struct{ Err error }

func (e *SignError) Error() string { return e.Err.Error() }

// Unwrap returns the key store's error.
func (e *SignError) Unwrap() error { return e.Err }

// Retried sends req, retrying transport failures (not denials, invalid
// requests or the job's deadline) retries times after delayMS (0: aziot's
// 3 s). auth gives each attempt its Authorization header ("" for none); its
// failure is a *SignError.
func Retried(ctx context.Context, retries, delayMS int, req *guest.HTTPRequest, auth func(context.Context) (string, error)) (*guest.HTTPResponse, error) {
	delay := 3 * time.Second
	if delayMS > 0 {
		delay = time.Duration(delayMS) * time.Millisecond
	}
	for i := 0; ; i++ {
		a, err := auth(ctx)
		if err != nil {
			return nil, &SignError{err}
		}
		delete(req.Header, "Authorization")
		if a != "" {
			if req.Header == nil {
				req.Header = map[string][]string{}
			}
			req.Header["Authorization"] = []string{a}
		}
		resp, err := guest.HTTPDo(ctx, req)
		var ge *guest.Error
		if err == nil || i >= retries || errors.As(err, &ge) && (ge.Code == guest.CodeDenied || ge.Code == guest.CodeInvalid || ge.Code == guest.CodeDeadline) {
			return resp, err
		}
		guest.Logger(ctx).Warn("request failed in transport; retrying", "url", req.URL, "err", err.Error(), "wait", delay.String())
		if serr := guest.Sleep(ctx, delay); serr != nil {
			return nil, err
		}
	}
}

// maxQuoted is how much of a text from the cloud an error quotes.
const maxQuoted = 200

// Cut returns s, a text from the cloud's answer (a message, a code, an
// ID), cut to its first 200 bytes at a character boundary, with "…" when
// cut. An error quotes no more: a longer one would pass the job's output
// limit and the job would fail "output", losing its code.
func Cut(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	i := maxQuoted
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// RetryAfter reads a Retry-After of delay-seconds. Seconds past what a
// time.Duration holds give the longest one: multiplied, they would wrap to
// a short or negative wait, and the module would hammer the service.
func RetryAfter(h map[string][]string) (time.Duration, bool) {
	const most = math.MaxInt64 / int64(time.Second)
	for k, v := range h {
		if strings.EqualFold(k, "Retry-After") && len(v) > 0 {
			if n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64); err == nil && n >= 0 {
				return time.Duration(min(n, most)) * time.Second, true
			}
		}
	}
	return 0, false
}
