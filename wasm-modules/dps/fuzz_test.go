package main

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/cloud"
	"github.com/warden-iot/warden/wasm-modules/cloud/cloudtest"
	"github.com/warden-iot/warden/wasm-modules/dps/dpsjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// FuzzDPSAnswer gives DPS's answer parsers arbitrary input: the body of
// any status (decodeResponse, then dpsError for an error status) and a
// Retry-After value. It asserts: no panic; only a success's body must be
// JSON; an error answer is CodeAuth for 401/403, else CodeFailed; a
// Retry-After is accepted exactly when it is a non-negative integer, and
// is then that many seconds, or the longest time.Duration when they do
// not fit (never a wrapped, short or negative wait).
func FuzzDPSAnswer(f *testing.F) {
	for _, s := range []struct {
		status     int
		body, wait string
	}{
		{200, `{"operationId":"4.a","status":"assigning"}`, "3"},
		{202, `{"operationId":"4.a","status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","payload":{"a":[1]}}}`, ""},
		{401, `{"errorCode":401002,"trackingId":"t","message":"Unauthorized"}`, " 10 "},
		{403, `{"errorCode":"x","errorMessage":"disabled"}`, "-1"},
		{404, `<html>not found</html>`, "Wed, 21 Oct 2015 07:28:00 GMT"},
		{200, `{"status":`, "9223372036"}, // the longest wait a time.Duration holds
		{401, `{"authenticationKey":"AAEC"}`, "+5"},
		{0, ``, "1e3"},
	} {
		f.Add(s.status, []byte(s.body), s.wait)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, wait string) {
		checkDecode(t, status, body)
		checkRetryAfter(t, wait)
	})
}

func checkDecode(t *testing.T, status int, body []byte) {
	t.Helper()
	r, err := decodeResponse(status, body)
	switch {
	case err != nil && (status >= 300 || len(body) == 0):
		t.Fatalf("answer %d %q: %v; only a success must be JSON", status, body, err)
	case err != nil:
		return
	case r == nil:
		t.Fatalf("answer %d %q: no response and no error", status, body)
	case status == 200 || status == 202:
		return
	}
	want := dpsjob.CodeFailed
	if status == 401 || status == 403 {
		want = dpsjob.CodeAuth
	}
	var ge *guest.Error
	if err := dpsError("register", status, r); !errors.As(err, &ge) || ge.Code != want {
		t.Fatalf("answer %d %q: %v, want code %s", status, body, err, want)
	}
}

func checkRetryAfter(t *testing.T, v string) {
	t.Helper()
	d, ok := cloud.RetryAfter(map[string][]string{"Retry-After": {v}})
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if ok != (err == nil && n >= 0) {
		t.Fatalf("Retry-After %q: accepted %v", v, ok)
	}
	const most = math.MaxInt64 / int64(time.Second)
	switch {
	case !ok:
	case int64(n) <= most && d != time.Duration(n)*time.Second:
		t.Fatalf("Retry-After %q: %v", v, d)
	case int64(n) > most && d < time.Duration(most)*time.Second:
		t.Fatalf("Retry-After %q: %v, want the longest wait", v, d)
	}
}

// dpsCodes are the codes a registration may fail with: the module's and
// the host's, never CodePanic or CodeModule (an unclassified error).
var dpsCodes = map[string]bool{
	dpsjob.CodeNetwork: true, dpsjob.CodeAuth: true, dpsjob.CodeThrottled: true, dpsjob.CodeFailed: true, dpsjob.CodeResponse: true,
	guest.CodeDenied: true, guest.CodeInvalid: true, guest.CodeNotFound: true, guest.CodeUnavailable: true,
	guest.CodeDeadline: true, guest.CodeFailed: true,
}

// FuzzDPSRegister runs whole registrations natively against a scripted
// DPS (cloudtest): arbitrary answers to the register, the TPM challenge
// and the polls, with any status, Retry-After and body, and transport
// failures. mode picks the attestation and the job's timings. It asserts:
// no panic; the module returns, with as many host calls as the answers
// warrant; a failure has one of dpsCodes; a success is an assignment with
// a hub and a device ID after at least one poll.
func FuzzDPSRegister(f *testing.F) {
	const op, assigned = `{"operationId":"4.op","status":"assigning"}`,
		`{"operationId":"4.op","status":"assigned","registrationState":{"registrationId":"dev-1","assignedHub":"hub.example","deviceId":"dev-1","payload":{"k":1}}}`
	for _, s := range []struct {
		mode   uint8
		script string
	}{
		{0, "202\n" + op + "\n\n200 1\n" + op + "\n\n200\n" + assigned},
		{2, "429 2\n\n429\n\n202\n" + op + "\n\n200\n" + assigned},
		{1, "401\n{\"authenticationKey\":\"YmxvYg==\"}\n\n202\n" + op + "\n\n200\n" +
			`{"status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","tpm":{"authenticationKey":"!!"}}}`},
		{4, "!unavailable\n\n!failed\n\n202\n" + op + "\n\n200\n{\"status\":\"failed\",\"registrationState\":{\"errorCode\":400207,\"errorMessage\":\"m\"}}"},
		{8, "401\n{\"errorCode\":401002,\"message\":\"Unauthorized\"}"},
		{16, "202\n" + op + "\n\n200 9223372036\n" + op + "\n\n200\n" + assigned},
		{0, "500\nupstream"},
		{0, "200\nnot json"},
		{0, "~\n{\"status\":\"x\"}"},
		{3, "202\n{}"},
	} {
		f.Add(s.mode, s.script)
	}
	f.Fuzz(func(t *testing.T, mode uint8, script string) {
		h := &cloudtest.Host{Answers: cloudtest.Parse(script)}
		h.MaxCalls = 20 + 10*len(h.Answers)
		out, err := cloudtest.Invoke(t, h, handle, fuzzJob(mode))
		checkRegistration(t, out, err)
	})
}

// fuzzJob is a registration job; mode's bits choose TPM attestation, a
// key store key, transport retries, no poll interval and the default
// throttle schedule, a short Retry-After cap.
func fuzzJob(mode uint8) []byte {
	j := dpsjob.Job{Endpoint: "https://dps.example/ignored", ScopeID: "0ne0001", RegistrationID: "dev-1",
		Authorization: "SharedAccessSignature sr=x", PollMS: 100, ThrottleMS: []int{10, 20}}
	j.TPM = mode&1 != 0
	if mode&2 != 0 {
		j.KeyID = "device-id"
	}
	if mode&4 != 0 {
		j.Retries, j.RetryDelayMS = 2, 5
	}
	if mode&8 != 0 {
		j.PollMS, j.ThrottleMS = -1, nil
	}
	if mode&16 != 0 {
		j.MaxPollMS = 50
	}
	b, _ := json.Marshal(j)
	return b
}

func checkRegistration(t *testing.T, out json.RawMessage, err error) {
	t.Helper()
	if err != nil {
		var ge *guest.Error
		if !errors.As(err, &ge) || !dpsCodes[ge.Code] || ge.Message == "" {
			t.Fatalf("registration failed without a DPS or host code: %#v", err)
		}
		return
	}
	var res dpsjob.Result
	if err := json.Unmarshal(out, &res); err != nil || res.AssignedHub == "" || res.DeviceID == "" ||
		res.RegistrationID != "dev-1" || res.Polls < 1 {
		t.Fatalf("registration result %s (%v)", out, err)
	}
}
