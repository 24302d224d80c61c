// Package hubjob is the contract between identityd and the IoT Hub module
// (wasm-modules/hub): one module-registry operation (aziot-api.md §8.4) and
// its result, both JSON.
package hubjob

import (
	"encoding/json"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// DefaultAPIVersion is the registry api-version aziot uses.
const DefaultAPIVersion = "2017-11-08-preview"

// Operations.
const (
	OpList    = "list"     // GET /devices/{d}/modules
	OpGet     = "get"      // GET /devices/{d}/modules/{m}
	OpCreate  = "create"   // PUT /devices/{d}/modules/{m}
	OpSetKeys = "set_keys" // PUT …/modules/{m} with If-Match: * and the SAS keys
	OpDelete  = "delete"   // DELETE …/modules/{m} with If-Match: *
)

// Error codes of the module (guest.Error codes), besides the host's.
const (
	// CodeNetwork: the hub (or parent) could not be reached, answered 500
	// (a parent edgeHub's upstream loss) or said networkError.
	CodeNetwork = "network"
	// CodeAuth: 401/403.
	CodeAuth = "auth"
	// CodeNotFound: 404.
	CodeNotFound = "hub_not_found"
	// CodeFailed: any other error answer.
	CodeFailed = "hub_failed"
	// CodeResponse: the answer could not be understood.
	CodeResponse = "hub_response"
)

// Job is one registry operation.
type Job struct {
	// Op is one of the Op constants.
	Op string `json:"op"`
	// URL is the base, https://<local_gateway_hostname>[:port].
	URL string `json:"url"`
	// DeviceID and ModuleID name the device and (but OpList) the module.
	DeviceID string `json:"device_id"`
	ModuleID string `json:"module_id,omitempty"`
	// APIVersion defaults to DefaultAPIVersion.
	APIVersion string `json:"api_version,omitempty"`
	// KeyID is the key store ID of the device's symmetric key
	// ("device-id", also for a key derived from a group enrollment's): the
	// module mints a fresh SAS token for HubName for each request, valid
	// identity.TokenLifetime (30 s, as aziot), its signature computed in
	// the key store (keys.hmac); the key never enters the module.
	KeyID string `json:"key_id,omitempty"`
	// Authorization is a finished SAS token, sent as is when KeyID is
	// empty (jobs of older brokers); empty with X.509 (TLS client
	// certificate in TLS).
	Authorization string `json:"authorization,omitempty"`
	// TPM makes the module sign the device's SAS token with the TPM auth
	// key (tpm.sign) for HubName; KeyID and Authorization are then unused.
	TPM bool `json:"tpm,omitempty"`
	// HubName is the hub's host name, the token's audience with KeyID or
	// TPM (requests may go to a gateway, URL).
	HubName string `json:"hub_name,omitempty"`
	// PrimaryKey and SecondaryKey are the module's SAS keys (base64) for
	// OpSetKeys.
	PrimaryKey   string `json:"primary_key,omitempty"`
	SecondaryKey string `json:"secondary_key,omitempty"`
	// TLS is the host's TLS settings.
	TLS *guest.TLSOptions `json:"tls,omitempty"`
	// Retries is how often a request that failed in transport is retried
	// (cloud_retries), after RetryDelayMS (0 means 3000, aziot's).
	Retries      int `json:"retries,omitempty"`
	RetryDelayMS int `json:"retry_delay_ms,omitempty"`
}

// Result is the registry's answer: Module for get/create/set_keys,
// Modules for list, nothing for delete. Both are the hub's Module JSON.
type Result struct {
	Module  json.RawMessage   `json:"module,omitempty"`
	Modules []json.RawMessage `json:"modules,omitempty"`
}
