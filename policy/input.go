package policy

import "time"

// Input is the document a policy decides on (input in Rego). Its shape is the
// contract with policy authors (docs/policy.md): change it only compatibly.
type Input struct {
	Caller Caller  `json:"caller"`
	Token  *Token  `json:"token"`
	Action Action  `json:"action"`
	Module *Module `json:"module"`
	// Time is the broker's clock at the decision, rendered RFC 3339 in UTC.
	Time time.Time `json:"time"`
}

// Caller is the peer of the connection, from SO_PEERCRED.
type Caller struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	PID int32  `json:"pid"`
	// Exe is /proc/<pid>/exe at accept time; empty when it could not be read.
	Exe string `json:"exe"`
	// Principal is the name of the first configured principal for UID, or "".
	Principal string `json:"principal"`
}

// Token describes a verified capability token carried by the request.
type Token struct {
	ID           string       `json:"id"`
	Subject      string       `json:"sub"`
	Expiry       int64        `json:"exp"`
	Capabilities []Capability `json:"capabilities"`
	// Parent is the jti of the token this one was attenuated from, or nil.
	Parent *string `json:"parent"`
}

// Capability grants Ops on Resource; Resource may end in "*".
type Capability struct {
	Resource string   `json:"resource"`
	Ops      []string `json:"ops"`
}

// Action is what the caller asks to do.
type Action struct {
	// Service is one of keyd, certd, identityd, tpmd, tokens, modules, admin.
	Service string `json:"service"`
	// Operation is the service operation name, e.g. sign, create, mint.
	Operation string `json:"operation"`
	// Resource is e.g. key:device-id, cert:x, identity:device, tpm:authkey.
	Resource   string         `json:"resource"`
	APIVersion string         `json:"api_version"`
	Details    map[string]any `json:"details"`
}

// Module identifies the WASM module on whose behalf a host call is made.
type Module struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// Principal is one [[principal]] of the configuration, as policy data.
type Principal struct {
	UID     uint32   `json:"uid"`
	Name    string   `json:"name,omitempty"`
	IDType  []string `json:"idtype,omitempty"`
	LocalID any      `json:"localid,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Certs   []string `json:"certs,omitempty"`
}

// Decision is the policy's answer, data.warden.authz.decision.
type Decision struct {
	Allow   bool     `json:"allow"`
	Reasons []string `json:"reasons"`
	// Revision identifies the policy bundle that decided (a digest of its files).
	Revision string `json:"revision"`
}
