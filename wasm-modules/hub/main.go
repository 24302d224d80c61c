// Command hub is Warden's IoT Hub module-registry client (aziot-api.md
// §8.4) as a WASM module: identityd gives it one operation (package hubjob)
// — list, get, create, set keys (If-Match: *), delete — and it returns the
// hub's answer after checking its shape. A 500 (a parent edgeHub reporting
// upstream loss), an unreachable hub or "networkError": true are network
// errors, so the broker keeps serving from backups (§8.5). With a
// symmetric device key it mints a fresh SAS token (30 s, as aziot) for each
// request, signed in the key store (keys.hmac); the key never enters the
// module.
//
// Build with GOOS=wasip1 GOARCH=wasm (make modules).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/warden-iot/warden/identity"

	"github.com/warden-iot/warden/wasm-modules/cloud"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

func main() { guest.Run(handle) }

// module is the part of the hub's Module JSON the module checks.
type module struct {
	ModuleID     string `json:"moduleId"`
	DeviceID     string `json:"deviceId"`
	GenerationID string `json:"generationId"`
}

// handle runs one registry operation.
func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var job hubjob.Job
	if err := json.Unmarshal(raw, &job); err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "decode the job: %v", err)
	}
	u, err := url.Parse(job.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, guest.Errorf(guest.CodeInvalid, "url %q is not an http(s) URL", job.URL)
	}
	if job.DeviceID == "" || (job.Op != hubjob.OpList && job.ModuleID == "") {
		return nil, guest.Errorf(guest.CodeInvalid, "the job needs device_id and (but for list) module_id")
	}
	if job.APIVersion == "" {
		job.APIVersion = hubjob.DefaultAPIVersion
	}
	if (job.TPM || job.KeyID != "") && job.HubName == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "the job needs hub_name, the SAS token's audience")
	}
	if job.TPM {
		sr := identity.EncodeSR(identity.HubAudience(job.HubName, job.DeviceID))
		se := time.Now().Add(time.Hour).Unix()
		sig, err := guest.TPMSign(ctx, identity.StringToSign(sr, se))
		if err != nil {
			return nil, fmt.Errorf("TPM sign: %w", err)
		}
		job.Authorization = identity.Token(sr, sig, se, "")
	}
	base := u.Scheme + "://" + u.Host + "/devices/" + escape(job.DeviceID) + "/modules"
	one := base + "/" + escape(job.ModuleID)
	q := "?api-version=" + url.QueryEscape(job.APIVersion)
	switch job.Op {
	case hubjob.OpList:
		body, err := do(ctx, &job, "GET", base+q, nil, false)
		if err != nil {
			return nil, err
		}
		mods, err := moduleList(body)
		if err != nil {
			return nil, err
		}
		return &hubjob.Result{Modules: mods}, nil
	case hubjob.OpGet:
		return one1(ctx, &job, "GET", one+q, nil, false)
	case hubjob.OpCreate:
		b, _ := json.Marshal(map[string]string{"moduleId": job.ModuleID, "deviceId": job.DeviceID})
		return one1(ctx, &job, "PUT", one+q, b, false)
	case hubjob.OpSetKeys:
		if job.PrimaryKey == "" || job.SecondaryKey == "" {
			return nil, guest.Errorf(guest.CodeInvalid, "set_keys needs primary_key and secondary_key")
		}
		b, _ := json.Marshal(map[string]any{"moduleId": job.ModuleID, "deviceId": job.DeviceID,
			"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]string{
				"primaryKey": job.PrimaryKey, "secondaryKey": job.SecondaryKey}}})
		return one1(ctx, &job, "PUT", one+q, b, true)
	case hubjob.OpDelete:
		if _, err := do(ctx, &job, "DELETE", one+q, nil, true); err != nil {
			return nil, err
		}
		return &hubjob.Result{}, nil
	}
	return nil, guest.Errorf(guest.CodeInvalid, "unknown operation %q", job.Op)
}

// escape percent-encodes an ID with the URL path set plus "=" and "/".
func escape(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), "=", "%3D")
}

func one1(ctx context.Context, job *hubjob.Job, method, u string, body []byte, ifMatch bool) (*hubjob.Result, error) {
	b, err := do(ctx, job, method, u, body, ifMatch)
	if err != nil {
		return nil, err
	}
	if _, err := check(b, job.ModuleID); err != nil {
		return nil, err
	}
	return &hubjob.Result{Module: b}, nil
}

// moduleList parses the hub's answer to list: an array of Modules.
func moduleList(b []byte) ([]json.RawMessage, error) {
	var mods []json.RawMessage
	if err := json.Unmarshal(b, &mods); err != nil {
		return nil, guest.Errorf(hubjob.CodeResponse, "list: %v", err)
	}
	for _, m := range mods {
		if _, err := check(m, ""); err != nil {
			return nil, err
		}
	}
	return mods, nil
}

// check parses a Module and, when id is set, checks it names it.
func check(b []byte, id string) (*module, error) {
	var m module
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, guest.Errorf(hubjob.CodeResponse, "module: %v", err)
	}
	if m.ModuleID == "" || (id != "" && m.ModuleID != id) {
		return nil, guest.Errorf(hubjob.CodeResponse, "module: the hub answered moduleId %q for %q", cloud.Cut(m.ModuleID), id)
	}
	return &m, nil
}

// hubError is the registry's error body.
type hubError struct {
	Message      string `json:"Message"`
	ErrorMessage string `json:"errorMessage"`
	NetworkError bool   `json:"networkError"`
}

func do(ctx context.Context, job *hubjob.Job, method, u string, body []byte, ifMatch bool) ([]byte, error) {
	hdr := map[string][]string{"Accept": {"application/json"}}
	if body != nil {
		hdr["Content-Type"] = []string{"application/json"}
	}
	if ifMatch {
		hdr["If-Match"] = []string{"*"}
	}
	auth := func(ctx context.Context) (string, error) { return authorization(ctx, job) }
	for attempt := 0; ; attempt++ {
		resp, err := cloud.Retried(ctx, job.Retries, job.RetryDelayMS, &guest.HTTPRequest{Method: method, URL: u, Header: hdr, Body: body, TLS: job.TLS}, auth)
		if err != nil || resp.Status != 429 {
			return answer(method, u, resp, err)
		}
		// Throttled: back off as aziot's cloud client does. A hub that
		// keeps throttling is unreachable for now (identityd serves from
		// backups), not a failure that makes it register again with DPS.
		if attempt == len(throttleWaits) {
			return nil, guest.Errorf(hubjob.CodeNetwork, "%s %s: the hub answered 429 %d times", method, u, attempt+1)
		}
		d, ok := cloud.RetryAfter(resp.Header)
		if !ok {
			d = throttleWaits[attempt]
		}
		d = min(d, maxThrottleWait)
		guest.Logger(ctx).Warn("the hub throttled the request; backing off", "wait", d.String(), "attempt", attempt+1)
		if err := guest.Sleep(ctx, d); err != nil {
			return nil, guest.Errorf(hubjob.CodeNetwork, "%s %s: the hub answered 429 and the job cannot wait %s: %v", method, u, d, err)
		}
	}
}

// throttleWaits are the waits after a 429 without Retry-After, one per
// attempt; maxThrottleWait caps a Retry-After.
var throttleWaits = []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}

const maxThrottleWait = time.Minute

// answer is the result of one request: the body of a success, else the
// error in the module's codes.
func answer(method, u string, resp *guest.HTTPResponse, err error) ([]byte, error) {
	if err != nil {
		var se *cloud.SignError
		if errors.As(err, &se) {
			return nil, se.Err
		}
		// Refusals and a missing TLS client certificate or key keep
		// their code: they are not the hub being unreachable.
		var ge *guest.Error
		if errors.As(err, &ge) && (ge.Code == guest.CodeDenied || ge.Code == guest.CodeInvalid || ge.Code == guest.CodeNotFound) {
			return nil, fmt.Errorf("%s %s: %w", method, u, err)
		}
		return nil, guest.Errorf(hubjob.CodeNetwork, "%s %s: %v", method, u, err)
	}
	if resp.Status >= 200 && resp.Status < 300 {
		return resp.Body, nil
	}
	return nil, answerError(method, u, resp.Status, resp.Body)
}

// answerError classifies the hub's error answer and reads its message:
// the body's, else the body's start.
func answerError(method, u string, status int, body []byte) error {
	var e hubError
	_ = json.Unmarshal(body, &e)
	msg := e.Message
	if msg == "" {
		msg = e.ErrorMessage
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	msg = cloud.Cut(msg)
	code := hubjob.CodeFailed
	switch {
	case e.NetworkError || status == 500 || status == 502 || status == 503 || status == 504:
		code = hubjob.CodeNetwork
	case status == 401 || status == 403:
		code = hubjob.CodeAuth
	case status == 404:
		code = hubjob.CodeNotFound
	}
	return guest.Errorf(code, "%s %s: the hub answered %d: %s", method, u, status, msg)
}

// authorization is the Authorization header of the next request: with
// KeyID a fresh SAS token for HubName, valid identity.TokenLifetime,
// signed in the key store (keys.hmac); else the job's token (TPM's, or a
// finished one from an older broker); "" for none (X.509).
func authorization(ctx context.Context, job *hubjob.Job) (string, error) {
	if job.KeyID == "" || job.TPM {
		return job.Authorization, nil
	}
	tok, err := identity.Mint(identity.HubAudience(job.HubName, job.DeviceID), "", time.Now(), identity.TokenLifetime,
		func(m []byte) ([]byte, error) { return guest.HMAC(ctx, job.KeyID, m) })
	if err != nil {
		return "", fmt.Errorf("sign a SAS token with key %s: %w", job.KeyID, err)
	}
	return tok, nil
}
