package main

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/warden-iot/warden/wasm-modules/cloud/cloudtest"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

// FuzzHubAnswer gives the registry answer parsers arbitrary input: a
// success's body as one Module (check) and as a list (moduleList), an
// error answer's body (answerError). It asserts: no panic; a Module that
// is accepted has a moduleId, the one asked for; a refused body is
// CodeResponse; an error answer is CodeNetwork for 500, 502, 503, 504 or
// "networkError": true, else CodeAuth for 401/403, CodeNotFound for 404,
// CodeFailed otherwise.
func FuzzHubAnswer(f *testing.F) {
	for _, s := range []struct {
		status   int
		body, id string
	}{
		{200, `{"moduleId":"m","deviceId":"d","generationId":"1","authentication":{"type":"sas"}}`, "m"},
		{200, `[{"moduleId":"a"},{"moduleId":"b","deviceId":"d"}]`, ""},
		{201, `{"moduleId":"other"}`, "m"},
		{200, `null`, ""},
		{404, `{"Message":"ErrorCode:ModuleNotFound;","ExceptionMessage":""}`, "m"},
		{400, `{"errorMessage":"x","networkError":true}`, ""},
		{401, `not json`, ""},
		{503, ``, ""},
	} {
		f.Add(s.status, []byte(s.body), s.id)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, id string) {
		if status >= 200 && status < 300 {
			checkModule(t, body, id)
			checkList(t, body)
			return
		}
		checkAnswerError(t, status, body)
	})
}

func checkModule(t *testing.T, body []byte, id string) {
	t.Helper()
	m, err := check(body, id)
	if err != nil {
		wantCode(t, err, hubjob.CodeResponse)
		return
	}
	if m.ModuleID == "" || (id != "" && m.ModuleID != id) {
		t.Fatalf("module %q for %q accepted", body, id)
	}
}

func checkList(t *testing.T, body []byte) {
	t.Helper()
	mods, err := moduleList(body)
	if err != nil {
		wantCode(t, err, hubjob.CodeResponse)
		return
	}
	for _, m := range mods {
		if _, err := check(m, ""); err != nil {
			t.Fatalf("list %q accepted with module %q: %v", body, m, err)
		}
	}
}

func checkAnswerError(t *testing.T, status int, body []byte) {
	t.Helper()
	var said struct {
		NetworkError bool `json:"networkError"`
	}
	json.Unmarshal(body, &said)
	want := hubjob.CodeFailed
	switch {
	case said.NetworkError || status == 500 || status == 502 || status == 503 || status == 504:
		want = hubjob.CodeNetwork
	case status == 401 || status == 403:
		want = hubjob.CodeAuth
	case status == 404:
		want = hubjob.CodeNotFound
	}
	wantCode(t, answerError("GET", "https://hub.example/devices/d/modules", status, body), want)
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ge *guest.Error
	if !errors.As(err, &ge) || ge.Code != code || ge.Message == "" {
		t.Fatalf("%#v, want code %s", err, code)
	}
}

// hubCodes are the codes an operation may fail with: the module's and the
// host's, never CodePanic or CodeModule (an unclassified error).
var hubCodes = map[string]bool{
	hubjob.CodeNetwork: true, hubjob.CodeAuth: true, hubjob.CodeNotFound: true, hubjob.CodeFailed: true, hubjob.CodeResponse: true,
	guest.CodeDenied: true, guest.CodeInvalid: true, guest.CodeNotFound: true, guest.CodeUnavailable: true,
	guest.CodeDeadline: true, guest.CodeFailed: true,
}

var hubOps = []string{hubjob.OpList, hubjob.OpGet, hubjob.OpCreate, hubjob.OpSetKeys, hubjob.OpDelete}

// FuzzHubRegistry runs each registry operation natively against a
// scripted hub (cloudtest): arbitrary answers, with any status and body,
// and transport failures. mode picks the credential and the retries. It
// asserts: no panic; the module returns; a failure has one of hubCodes; a
// success is the operation's: the asked module for get, create and
// set_keys, modules with IDs for list, nothing for delete.
func FuzzHubRegistry(f *testing.F) {
	const mod = `{"moduleId":"mod-1","deviceId":"dev-1","generationId":"637","etag":"x","authentication":{"type":"sas"}}`
	for _, s := range []struct {
		op, mode uint8
		script   string
	}{
		{1, 0, "200\n" + mod},
		{0, 2, "200\n[" + mod + `,{"moduleId":"$edgeAgent"}]`},
		{2, 1, "!unavailable\n\n201\n" + mod},
		{3, 4, "!failed\n\n!unavailable\n\n200\n" + mod},
		{4, 0, "204\n"},
		{1, 0, "404\n{\"Message\":\"ErrorCode:ModuleNotFound;\"}"},
		{0, 0, "400\n{\"networkError\":true}"},
		{2, 0, "200\n{\"moduleId\":\"other\"}"},
		{0, 0, "200\nnull"},
		{1, 0, "~\n[]"},
	} {
		f.Add(s.op, s.mode, s.script)
	}
	f.Fuzz(func(t *testing.T, op, mode uint8, script string) {
		h := &cloudtest.Host{Answers: cloudtest.Parse(script)}
		h.MaxCalls = 20 + 10*len(h.Answers)
		name := hubOps[int(op)%len(hubOps)]
		out, err := cloudtest.Invoke(t, h, handle, hubJob(name, mode))
		checkOperation(t, name, out, err)
	})
}

// hubJob is an operation on module mod-1 of dev-1; mode's bits choose TPM,
// a key store key, transport retries.
func hubJob(op string, mode uint8) []byte {
	j := hubjob.Job{Op: op, URL: "https://gateway.example:8443", DeviceID: "dev-1", ModuleID: "mod-1", HubName: "hub.example",
		Authorization: "SharedAccessSignature sr=x", PrimaryKey: "cA==", SecondaryKey: "cw=="}
	j.TPM = mode&1 != 0
	if mode&2 != 0 {
		j.KeyID = "device-id"
	}
	if mode&4 != 0 {
		j.Retries, j.RetryDelayMS = 2, 5
	}
	b, _ := json.Marshal(j)
	return b
}

func checkOperation(t *testing.T, op string, out json.RawMessage, err error) {
	t.Helper()
	if err != nil {
		var ge *guest.Error
		if !errors.As(err, &ge) || !hubCodes[ge.Code] || ge.Message == "" {
			t.Fatalf("%s failed without a hub or host code: %#v", op, err)
		}
		return
	}
	var res hubjob.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: result %s: %v", op, out, err)
	}
	switch op {
	case hubjob.OpList:
		for _, m := range res.Modules {
			if _, err := check(m, ""); err != nil || res.Module != nil {
				t.Fatalf("list: result %s", out)
			}
		}
	case hubjob.OpDelete:
		if res.Module != nil || res.Modules != nil {
			t.Fatalf("delete: result %s", out)
		}
	default:
		if _, err := check(res.Module, "mod-1"); err != nil || res.Modules != nil {
			t.Fatalf("%s: result %s", op, out)
		}
	}
}
