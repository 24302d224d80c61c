package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/warden-iot/warden/wasm-modules/cloud/cloudtest"
	"github.com/warden-iot/warden/wasm-modules/dps/dpsjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// TestMissingClientCertIsNotNetwork: an X.509 registration whose TLS
// client certificate or key is missing from the stores (http.do fails
// not_found, as a missing keys.hmac key does) is not a network error:
// identityd would take it for DPS being unreachable.
func TestMissingClientCertIsNotNetwork(t *testing.T) {
	j := dpsjob.Job{Endpoint: "https://dps.example", ScopeID: "0ne0001", RegistrationID: "dev-1",
		TLS: &guest.TLSOptions{ClientCertID: "device-id", ClientKeyID: "device-id"}, PollMS: -1}
	in, _ := json.Marshal(j)
	h := &cloudtest.Host{Answers: cloudtest.Parse("!not_found"), MaxCalls: 20}
	_, err := cloudtest.Invoke(t, h, handle, in)
	if code(err) != guest.CodeNotFound {
		t.Fatalf("err = %v (code %q), want %q", err, code(err), guest.CodeNotFound)
	}
}

// TestTPMChallengeRefused: DPS refusing the TPM challenge (401 without an
// authenticationKey, e.g. no such enrollment) is an auth failure carrying
// DPS's message, as every other 401 is; another error answer is
// dps_failed, not an unparseable answer.
func TestTPMChallengeRefused(t *testing.T) {
	in, _ := json.Marshal(dpsjob.Job{Endpoint: "https://dps.example", ScopeID: "0ne0001", RegistrationID: "dev-1", TPM: true, PollMS: -1})
	for script, want := range map[string]string{
		"401\n{\"errorCode\":401002,\"message\":\"Unauthorized\"}":         dpsjob.CodeAuth,
		"404\n{\"errorCode\":404201,\"message\":\"enrollment not found\"}": dpsjob.CodeFailed,
		"202\n{\"operationId\":\"x\",\"status\":\"assigning\"}":            dpsjob.CodeResponse,
	} {
		h := &cloudtest.Host{Answers: cloudtest.Parse(script), MaxCalls: 20}
		_, err := cloudtest.Invoke(t, h, handle, in)
		if code(err) != want {
			t.Errorf("%q: err = %v (code %q), want %q", script, err, code(err), want)
		}
	}
}

// TestLongErrorIsCut: DPS's error texts are quoted cut, so that a failure
// whose errorMessage passes the job's 1 MiB output limit still fails with
// its code (as WASM, the whole message would fail the job "output").
func TestLongErrorIsCut(t *testing.T) {
	long := strings.Repeat("é", 1<<20)
	in, _ := json.Marshal(dpsjob.Job{Endpoint: "https://dps.example", ScopeID: "0ne0001", RegistrationID: "dev-1", PollMS: -1})
	for script, want := range map[string]string{
		"202\n{\"operationId\":\"o\",\"status\":\"assigning\"}\n\n200\n{\"status\":\"failed\",\"registrationState\":{\"errorCode\":400207,\"errorMessage\":\"" + long + "\"}}": dpsjob.CodeFailed,
		"202\n{\"operationId\":\"o\",\"status\":\"assigning\"}\n\n200\n{\"status\":\"failed\",\"registrationState\":{\"errorCode\":\"" + long + "\"}}":                         dpsjob.CodeFailed,
		"403\n{\"errorCode\":403000,\"message\":\"" + long + "\"}":                                    dpsjob.CodeAuth,
		"202\n{\"operationId\":\"o\",\"status\":\"assigning\"}\n\n200\n{\"status\":\"" + long + "\"}": dpsjob.CodeResponse,
	} {
		h := &cloudtest.Host{Answers: cloudtest.Parse(script), MaxCalls: 20}
		_, err := cloudtest.Invoke(t, h, handle, in)
		var ge *guest.Error
		if !errors.As(err, &ge) || ge.Code != want || len(ge.Message) > 4096 || !utf8.ValidString(ge.Message) {
			t.Errorf("%.80q…: code %q, %d bytes of message, want code %q and at most 4 KiB", script, code(err), len(fmt.Sprint(err)), want)
		}
	}
}
