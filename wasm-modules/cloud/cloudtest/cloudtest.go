// Package cloudtest is a scripted host for fuzzing the cloud modules
// natively (guest.Invoke): each http.do gets the script's next answer, as
// DPS or IoT Hub could send it, so that arbitrary cloud answers reach the
// modules' parsers without a network or a WASM build. For tests only.
package cloudtest

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// MaxSleep is the host's default longest clock.sleep, which Host enforces
// as the real host does.
const MaxSleep = 5 * time.Minute

// Answer is one scripted outcome of http.do.
type Answer struct {
	// Code, when set, fails the call with this guest.Error code, as the
	// host does when the peer cannot be reached.
	Code string
	// Raw, when set, is the host's response as is, not a JSON
	// guest.HTTPResponse built from Status, Header and Body.
	Raw  []byte
	Resp guest.HTTPResponse
}

// Parse reads a script: answers separated by a blank line, each a first
// line and a body (the rest). The first line is "STATUS" or
// "STATUS RETRY-AFTER" (a Retry-After header with the rest of the line),
// "!CODE" for a transport failure, or "~" for a raw host response.
func Parse(script string) []Answer {
	var out []Answer
	for part := range strings.SplitSeq(script, "\n\n") {
		head, body, _ := strings.Cut(part, "\n")
		switch {
		case strings.HasPrefix(head, "!"):
			out = append(out, Answer{Code: head[1:]})
		case head == "~":
			out = append(out, Answer{Raw: []byte(body)})
		default:
			st, ra, hasRA := strings.Cut(head, " ")
			a := Answer{Resp: guest.HTTPResponse{Body: []byte(body)}}
			a.Resp.Status, _ = strconv.Atoi(st)
			if hasRA {
				a.Resp.Header = map[string][]string{"Retry-After": {ra}}
			}
			out = append(out, a)
		}
	}
	return out
}

// Host answers a module's host calls: http.do from Answers, then fails
// with guest.CodeDeadline once they run out or after MaxCalls calls (the
// host's deadline and call limit, which end a module that would loop);
// the other calls succeed with fixed values.
type Host struct {
	Answers  []Answer
	MaxCalls int

	mu       sync.Mutex
	calls    int
	requests []guest.HTTPRequest
	sleeps   []time.Duration
}

// Call is one host call of the module.
func (h *Host) Call(_ context.Context, op string, req []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.calls > h.MaxCalls {
		return nil, guest.Errorf(guest.CodeDeadline, "call %d is over the script's limit of %d", h.calls, h.MaxCalls)
	}
	switch op {
	case guest.OpHTTPDo:
		return h.httpDo(req)
	case guest.OpClockSleep:
		return h.sleep(req)
	case guest.OpKeysHMAC:
		return json.Marshal(guest.HMACResponse{Signature: make([]byte, 32)})
	case guest.OpTPMSign:
		return json.Marshal(guest.TPMSignResponse{Digest: make([]byte, 32)})
	case guest.OpTPMKeys:
		return json.Marshal(guest.TPMKeysResponse{EndorsementKey: []byte("ek"), StorageRootKey: []byte("srk")})
	case guest.OpTPMImportAuthKey, guest.OpLog:
		return []byte("{}"), nil
	}
	return nil, guest.Errorf(guest.CodeUnavailable, "%s: not scripted", op)
}

func (h *Host) httpDo(req []byte) ([]byte, error) {
	var r guest.HTTPRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "http.do: request: %v", err)
	}
	h.requests = append(h.requests, r)
	if len(h.Answers) == 0 {
		return nil, guest.Errorf(guest.CodeDeadline, "the script has no more answers")
	}
	a := h.Answers[0]
	h.Answers = h.Answers[1:]
	switch {
	case a.Code != "":
		return nil, guest.Errorf(a.Code, "scripted failure")
	case a.Raw != nil:
		return a.Raw, nil
	}
	return json.Marshal(a.Resp)
}

// sleep records the wait and returns at once, refusing what the host
// refuses.
func (h *Host) sleep(req []byte) ([]byte, error) {
	var r guest.SleepRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "clock.sleep: request: %v", err)
	}
	if r.Milliseconds > MaxSleep.Milliseconds() {
		return nil, guest.Errorf(guest.CodeInvalid, "clock.sleep: %d ms is longer than %v", r.Milliseconds, MaxSleep)
	}
	h.sleeps = append(h.sleeps, time.Duration(r.Milliseconds)*time.Millisecond)
	return []byte("{}"), nil
}

// Calls is how many host calls the module made.
func (h *Host) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// Requests are the module's http.do requests, in order.
func (h *Host) Requests() []guest.HTTPRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]guest.HTTPRequest(nil), h.requests...)
}

// Sleeps are the waits the module asked for, in order.
func (h *Host) Sleeps() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.sleeps...)
}

// Invoke runs handler on job against h and fails the test if it does not
// return within a few seconds: the script's end makes every module return.
func Invoke(tb testing.TB, h *Host, handler guest.Handler, job []byte) (json.RawMessage, error) {
	tb.Helper()
	type outcome struct {
		out json.RawMessage
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		out, err := guest.Invoke(context.Background(), h, handler, job)
		done <- outcome{out, err}
	}()
	select {
	case o := <-done:
		return o.out, o.err
	case <-time.After(10 * time.Second):
		tb.Fatalf("the module did not return within 10 s (%d host calls)", h.Calls())
	}
	return nil, nil
}
