// Command dps is Warden's Azure Device Provisioning Service client
// (aziot-api.md §8.3, protocols.md §1.1) as a WASM provisioning module:
// identityd gives it a registration job (package dpsjob) on standard input
// and it returns the assignment. It registers, polls the operation with
// Retry-After, backs off 429 answers, and classifies failures as network
// (DPS unreachable or 5xx: the broker may run on backups), auth (401/403)
// or a DPS failure. With symmetric-key attestation it mints a fresh SAS
// token (30 s, as aziot) for each request, signed in the key store
// (keys.hmac); the TLS client certificate of X.509 attestation is used by
// the host by store ID; so no credential enters the module. DPS's answers
// are only parsed here.
//
// Build with GOOS=wasip1 GOARCH=wasm (make modules). The same source runs
// natively in-process through guest.Invoke / host.RunNative (tests).
package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/wasm-modules/cloud"
	"github.com/warden-iot/warden/wasm-modules/dps/dpsjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// version names the build in the module's log (set with -ldflags -X).
var version = "dev"

func main() { guest.Run(handle) }

// handle runs one registration job.
func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var job dpsjob.Job
	if err := json.Unmarshal(raw, &job); err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "decode the job: %v", err)
	}
	base, err := baseURL(job.Endpoint)
	if err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "%v", err)
	}
	if job.RegistrationID == "" && job.TLS != nil && job.TLS.ClientCertID != "" {
		cn, err := certCN(ctx, job.TLS.ClientCertID)
		if err != nil {
			return nil, err
		}
		job.RegistrationID = cn
	}
	if job.ScopeID == "" || job.RegistrationID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "the job needs scope_id and registration_id (or an X.509 client certificate with a CN)")
	}
	if job.APIVersion == "" {
		job.APIVersion = dpsjob.DefaultAPIVersion
	}
	c := &client{job: &job, base: base}
	return c.register(ctx)
}

// certCN is the subject CN of the first certificate of cert store ID id:
// X.509 attestation's default registration ID.
func certCN(ctx context.Context, id string) (string, error) {
	p, err := guest.GetCert(ctx, id)
	if err != nil {
		return "", fmt.Errorf("registration ID from certificate %s: %w", id, err)
	}
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		return "", guest.Errorf(guest.CodeInvalid, "certificate %s is not PEM", id)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", guest.Errorf(guest.CodeInvalid, "certificate %s: %v", id, err)
	}
	if c.Subject.CommonName == "" {
		return "", guest.Errorf(guest.CodeInvalid, "certificate %s has no CN", id)
	}
	return c.Subject.CommonName, nil
}

// baseURL keeps the endpoint's scheme, host and port.
func baseURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("endpoint %q is not an http(s) URL", endpoint)
	}
	return u.Scheme + "://" + u.Host, nil
}

type client struct {
	job       *dpsjob.Job
	base      string
	throttled int
}

// response is DPS's operation / registration answer.
type response struct {
	OperationID       string          `json:"operationId"`
	Status            string          `json:"status"`
	RegistrationState *registration   `json:"registrationState"`
	ErrorCode         json.RawMessage `json:"errorCode"`
	ErrorMessage      string          `json:"errorMessage"`
	AuthenticationKey string          `json:"authenticationKey"`
	Code              json.RawMessage `json:"code"`
	Message           string          `json:"message"`
}

type registration struct {
	TPM *struct {
		AuthenticationKey string `json:"authenticationKey"`
	} `json:"tpm"`
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Payload        json.RawMessage `json:"payload"`
	ErrorCode      json.RawMessage `json:"errorCode"`
	ErrorMessage   string          `json:"errorMessage"`
}

func (c *client) url(parts ...string) string {
	p := make([]string, len(parts))
	for i, s := range parts {
		p[i] = url.PathEscape(s)
	}
	return c.base + "/" + strings.Join(p, "/") + "?api-version=" + url.QueryEscape(c.job.APIVersion)
}

func (c *client) register(ctx context.Context) (*dpsjob.Result, error) {
	log := guest.Logger(ctx).With("registration_id", c.job.RegistrationID, "version", version)
	body := map[string]any{"registrationId": c.job.RegistrationID}
	if len(c.job.Payload) > 0 && string(c.job.Payload) != "null" {
		body["payload"] = c.job.Payload
	}
	regURL := c.url(c.job.ScopeID, "registrations", c.job.RegistrationID, "register")
	if c.job.TPM {
		if err := c.tpmChallenge(ctx, body, regURL); err != nil {
			return nil, err
		}
	}
	b, _ := json.Marshal(body)
	status, resp, hdr, err := c.do(ctx, "PUT", regURL, b)
	if err != nil {
		return nil, err
	}
	if status != 200 && status != 202 {
		return nil, dpsError("register", status, resp)
	}
	if resp.OperationID == "" {
		return nil, guest.Errorf(dpsjob.CodeResponse, "register: DPS answered %d without an operationId", status)
	}
	log.Info("registration accepted", "operation", cloud.Cut(resp.OperationID))
	polls := 0
	for {
		if err := guest.Sleep(ctx, c.wait(hdr)); err != nil {
			return nil, fmt.Errorf("wait for operation %s: %w", cloud.Cut(resp.OperationID), err)
		}
		polls++
		status, op, h, err := c.do(ctx, "GET", c.url(c.job.ScopeID, "registrations", c.job.RegistrationID, "operations", resp.OperationID), nil)
		if err != nil {
			return nil, err
		}
		hdr = h
		if status != 200 && status != 202 {
			return nil, dpsError("operation", status, op)
		}
		switch op.Status {
		case "assigning", "unassigned", "registering":
			continue
		case "assigned":
			rs := op.RegistrationState
			if rs == nil || rs.AssignedHub == "" || rs.DeviceID == "" {
				return nil, guest.Errorf(dpsjob.CodeResponse, "operation: assigned without assignedHub and deviceId")
			}
			if c.job.TPM && rs.TPM != nil && rs.TPM.AuthenticationKey != "" {
				if err := c.importKey(ctx, rs.TPM.AuthenticationKey); err != nil {
					return nil, err
				}
			}
			log.Info("assigned", "hub", rs.AssignedHub, "device_id", rs.DeviceID, "polls", polls)
			return &dpsjob.Result{RegistrationID: c.job.RegistrationID, AssignedHub: rs.AssignedHub, DeviceID: rs.DeviceID, Payload: rs.Payload,
				Polls: polls, Throttled: c.throttled}, nil
		case "failed", "disabled", "blacklisted":
			msg := ""
			if rs := op.RegistrationState; rs != nil {
				msg = fmt.Sprintf("%s (code %s)", cloud.Cut(rs.ErrorMessage), cloud.Cut(string(rs.ErrorCode)))
			}
			return nil, guest.Errorf(dpsjob.CodeFailed, "registration %s: %s", op.Status, msg)
		default:
			return nil, guest.Errorf(dpsjob.CodeResponse, "operation: unknown status %q", cloud.Cut(op.Status))
		}
	}
}

// tpmChallenge is TPM attestation's first round: register with the EK and
// SRK and no Authorization; DPS answers 401 with the auth key encrypted to
// the TPM, which is imported; then tokens are signed with it.
func (c *client) tpmChallenge(ctx context.Context, body map[string]any, regURL string) error {
	keys, err := guest.TPMKeys(ctx)
	if err != nil {
		return fmt.Errorf("TPM keys: %w", err)
	}
	body["tpm"] = map[string]string{"endorsementKey": base64.StdEncoding.EncodeToString(keys.EndorsementKey),
		"storageRootKey": base64.StdEncoding.EncodeToString(keys.StorageRootKey)}
	b, _ := json.Marshal(body)
	c.job.Authorization = ""
	status, resp, _, err := c.do(ctx, "PUT", regURL, b)
	if err != nil {
		return err
	}
	if status != 401 || resp.AuthenticationKey == "" {
		if status >= 300 {
			return dpsError("TPM challenge", status, resp)
		}
		return guest.Errorf(dpsjob.CodeResponse, "TPM challenge: DPS answered %d without an authenticationKey", status)
	}
	if err := c.importKey(ctx, resp.AuthenticationKey); err != nil {
		return err
	}
	sr := identity.EncodeSR(identity.DPSAudience(c.job.ScopeID, c.job.RegistrationID))
	se := time.Now().Add(time.Hour).Unix()
	sig, err := guest.TPMSign(ctx, identity.StringToSign(sr, se))
	if err != nil {
		return fmt.Errorf("TPM sign: %w", err)
	}
	c.job.Authorization = identity.Token(sr, sig, se, "registration")
	return nil
}

func (c *client) importKey(ctx context.Context, b64 string) error {
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return guest.Errorf(dpsjob.CodeResponse, "TPM authenticationKey is not base64: %v", err)
	}
	if err := guest.TPMImportAuthKey(ctx, blob); err != nil {
		return fmt.Errorf("TPM import of the auth key: %w", err)
	}
	return nil
}

// wait is the delay before the next poll: Retry-After (capped), else the
// job's poll interval.
func (c *client) wait(h map[string][]string) time.Duration {
	if d, ok := cloud.RetryAfter(h); ok {
		return min(d, c.maxPoll())
	}
	switch {
	case c.job.PollMS < 0:
		return 0
	case c.job.PollMS == 0:
		return 5 * time.Second
	}
	return time.Duration(c.job.PollMS) * time.Millisecond
}

func (c *client) maxPoll() time.Duration {
	if c.job.MaxPollMS > 0 {
		return time.Duration(c.job.MaxPollMS) * time.Millisecond
	}
	return time.Minute
}

var defaultThrottle = []int{60_000, 120_000, 180_000, 300_000}

// do sends one request, backing off 429 answers; transport failures are
// CodeNetwork.
func (c *client) do(ctx context.Context, method, u string, body []byte) (int, *response, map[string][]string, error) {
	schedule := c.job.ThrottleMS
	if schedule == nil {
		schedule = defaultThrottle
	}
	for attempt := 0; ; attempt++ {
		hdr := map[string][]string{"Accept": {"application/json"}, "Content-Type": {"application/json; charset=utf-8"}}
		if body == nil {
			body = []byte("{}")
		}
		resp, err := cloud.Retried(ctx, c.job.Retries, c.job.RetryDelayMS, &guest.HTTPRequest{Method: method, URL: u, Header: hdr, Body: body, TLS: c.job.TLS}, c.authorization)
		if err != nil {
			var se *cloud.SignError
			if errors.As(err, &se) {
				return 0, nil, nil, se.Err
			}
			// Refusals and a missing TLS client certificate or key keep
			// their code: they are not DPS being unreachable.
			var ge *guest.Error
			if errors.As(err, &ge) && (ge.Code == guest.CodeDenied || ge.Code == guest.CodeInvalid || ge.Code == guest.CodeNotFound) {
				return 0, nil, nil, fmt.Errorf("%s %s: %w", method, u, err)
			}
			return 0, nil, nil, guest.Errorf(dpsjob.CodeNetwork, "%s %s: %v", method, u, err)
		}
		if resp.Status == 429 {
			if attempt >= len(schedule) {
				return 0, nil, nil, guest.Errorf(dpsjob.CodeThrottled, "%s: DPS answered 429 %d times", method, attempt+1)
			}
			c.throttled++
			d, ok := cloud.RetryAfter(resp.Header)
			if !ok {
				d = time.Duration(schedule[attempt]) * time.Millisecond
			}
			guest.Logger(ctx).Warn("DPS throttled the request; backing off", "wait", d.String(), "attempt", attempt+1)
			if err := guest.Sleep(ctx, d); err != nil {
				return 0, nil, nil, guest.Errorf(dpsjob.CodeThrottled, "%s: DPS answered 429 and the job cannot wait %s: %v", method, d, err)
			}
			continue
		}
		if resp.Status >= 500 {
			return 0, nil, nil, guest.Errorf(dpsjob.CodeNetwork, "%s %s: DPS answered %d: %s", method, u, resp.Status, snippet(resp.Body))
		}
		r, err := decodeResponse(resp.Status, resp.Body)
		if err != nil {
			return 0, nil, nil, guest.Errorf(dpsjob.CodeResponse, "%s %s: %d with a body that is not JSON: %v", method, u, resp.Status, err)
		}
		return resp.Status, r, resp.Header, nil
	}
}

// decodeResponse parses DPS's answer. Only a success must be JSON: an
// error answer keeps what could be read, for dpsError's message.
func decodeResponse(status int, body []byte) (*response, error) {
	var r response
	if len(body) > 0 {
		if err := json.Unmarshal(body, &r); err != nil && status < 300 {
			return nil, err
		}
	}
	return &r, nil
}

// dpsError classifies a non-2xx answer.
func dpsError(what string, status int, r *response) error {
	msg, code := r.ErrorMessage, string(r.ErrorCode)
	if msg == "" {
		msg, code = r.Message, string(r.Code)
	}
	msg, code = cloud.Cut(msg), cloud.Cut(code)
	if status == 401 || status == 403 {
		return guest.Errorf(dpsjob.CodeAuth, "%s: DPS answered %d: %s (code %s)", what, status, msg, code)
	}
	return guest.Errorf(dpsjob.CodeFailed, "%s: DPS answered %d: %s (code %s)", what, status, msg, code)
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// authorization is the Authorization header of the next request: with
// KeyID a fresh SAS token, valid identity.TokenLifetime, signed in the key
// store (keys.hmac); else the job's token (TPM's, signed by the TPM, or a
// finished one from an older broker); "" for none (X.509, TPM challenge).
func (c *client) authorization(ctx context.Context) (string, error) {
	if c.job.KeyID == "" || c.job.TPM {
		return c.job.Authorization, nil
	}
	tok, err := identity.Mint(identity.DPSAudience(c.job.ScopeID, c.job.RegistrationID), "registration", time.Now(), identity.TokenLifetime,
		func(m []byte) ([]byte, error) { return guest.HMAC(ctx, c.job.KeyID, m) })
	if err != nil {
		return "", fmt.Errorf("sign a SAS token with key %s: %w", c.job.KeyID, err)
	}
	return tok, nil
}
