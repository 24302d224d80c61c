// Package dpsjob is the contract between identityd and the DPS module
// (wasm-modules/dps): the registration job and its result, both JSON. It
// has no dependencies beyond the guest ABI so that the module (GOOS=wasip1)
// and the broker share one definition.
package dpsjob

import (
	"encoding/json"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// DefaultAPIVersion is the DPS api-version aziot uses (aziot-api.md §8.3).
const DefaultAPIVersion = "2021-06-01"

// Error codes of the module (guest.Error codes), besides the host's.
const (
	// CodeNetwork: DPS could not be reached, or answered 5xx; backups may
	// be used (§8.5).
	CodeNetwork = "network"
	// CodeAuth: DPS refused the credential (401, 403).
	CodeAuth = "auth"
	// CodeThrottled: DPS kept answering 429 past the backoff schedule or
	// the job's deadline.
	CodeThrottled = "throttled"
	// CodeFailed: DPS answered another error, or the registration failed.
	CodeFailed = "dps_failed"
	// CodeResponse: DPS's answer could not be understood.
	CodeResponse = "dps_response"
)

// Job is one DPS registration: register, then poll the operation.
type Job struct {
	// Endpoint is the global endpoint; only its scheme, host and port are
	// used (a path is replaced, not appended to).
	Endpoint string `json:"endpoint"`
	// ScopeID is the ID scope.
	ScopeID string `json:"scope_id"`
	// RegistrationID is the device's registration ID; empty with an X.509
	// client certificate means its subject CN.
	RegistrationID string `json:"registration_id,omitempty"`
	// APIVersion defaults to DefaultAPIVersion.
	APIVersion string `json:"api_version,omitempty"`
	// KeyID selects symmetric-key attestation: the key store ID of the
	// device's symmetric key ("device-id"; for a group enrollment the
	// broker stores the derived device key there). The module mints a
	// fresh SAS token for each request, valid identity.TokenLifetime
	// (30 s, as aziot), with skn=registration, its signature computed in
	// the key store (keys.hmac): the key never enters the module.
	KeyID string `json:"key_id,omitempty"`
	// Authorization is a finished SAS token header value, sent as is
	// with every request when KeyID is empty (jobs of older brokers);
	// empty for X.509 (TLS client certificate in TLS).
	Authorization string `json:"authorization,omitempty"`
	// TPM selects TPM attestation: the module reads the EK and SRK
	// (tpm.keys), answers DPS's 401 challenge by importing the auth key
	// (tpm.import_auth_key) and signs its SAS tokens with it (tpm.sign);
	// a new key in the assignment is imported too. KeyID and
	// Authorization are unused.
	TPM bool `json:"tpm,omitempty"`
	// Payload is the custom allocation payload (omitted when empty).
	Payload json.RawMessage `json:"payload,omitempty"`
	// TLS is the host's TLS settings: trust anchors and, for X.509, the
	// client certificate and key by store ID.
	TLS *guest.TLSOptions `json:"tls,omitempty"`
	// PollMS is the wait before each poll when DPS sends no Retry-After;
	// 0 means 5000 (aziot). A negative value means no wait.
	PollMS int `json:"poll_ms,omitempty"`
	// MaxPollMS caps a Retry-After; 0 means 60000.
	MaxPollMS int `json:"max_poll_ms,omitempty"`
	// Retries is how often a request that failed in transport (connect,
	// TLS, I/O; not an HTTP answer) is retried (cloud_retries), after
	// RetryDelayMS (0 means 3000, aziot's).
	Retries      int `json:"retries,omitempty"`
	RetryDelayMS int `json:"retry_delay_ms,omitempty"`
	// ThrottleMS is the backoff schedule after a 429 without Retry-After
	// (one entry per retry); nil means aziot's 60, 120, 180, 300 s.
	ThrottleMS []int `json:"throttle_ms,omitempty"`
}

// Result is an assignment.
type Result struct {
	// RegistrationID is the registration ID used.
	RegistrationID string `json:"registration_id"`
	// AssignedHub is the IoT Hub host name.
	AssignedHub string `json:"assigned_hub"`
	// DeviceID is the device's ID on the hub.
	DeviceID string `json:"device_id"`
	// Payload is the data DPS returned (custom allocation), if any.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Polls is how many operation polls it took.
	Polls int `json:"polls"`
	// Throttled is how many 429 answers were backed off.
	Throttled int `json:"throttled"`
}
