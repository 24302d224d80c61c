// Package config loads Warden's configuration: one TOML file plus the
// config.d/*.toml drop-ins next to it, merged with aziot's rules (tables merge
// recursively, arrays concatenate, other values are replaced; drop-ins apply
// in file-name order).
//
// The schema is aziot's super-config (/etc/aziot/config.toml, see
// spec/aziot-api.md §9.2), so an existing aziot configuration loads as it is,
// plus certd's per-certificate [cert_issuance.<certId>] options, the
// [[principal]] tables of the aziot services, and Warden's own [warden]
// tables. Unlike aziot, an unknown key or a value of the wrong type is an
// error that names the key and the file. docs/config.md documents every key.
package config

import (
	"math"
	"path/filepath"
	"time"
)

// Limits of the configuration's numbers.
const (
	// MaxCloudTimeoutSec bounds cloud_timeout_sec: a job may take five
	// times it, and a value past a day is a typo, not a network.
	MaxCloudTimeoutSec = 86400
	// MaxExpiryDays bounds expiry_days: the validity is a time.Duration,
	// which holds ~292 years; past it the product wraps to a certificate
	// that expired before it was issued.
	MaxExpiryDays = int(math.MaxInt64 / int64(24*time.Hour))
)

// Default values of the configuration.
const (
	DefaultCloudTimeoutSec = 70
	DefaultCloudRetries    = 1
	DefaultMaxRequests     = 10
	DefaultTCTI            = "device"
	DefaultAuthKeyIndex    = 0x00_01_00
	MaxAuthKeyIndex        = 0x7F_FF_FF
	DefaultStateDir        = "/var/lib/warden"
	DefaultSocketDir       = "/run/warden"
	DefaultExpiryDays      = 30
)

// Config is the merged, validated configuration. Field comments give each
// key's TOML name and default; Load and LoadFiles apply the defaults.
type Config struct {
	// Hostname (hostname) is the device's host name, used for local-identity
	// certificate names. Empty means the system host name, as in aziot.
	Hostname string `toml:"hostname,omitempty"`
	// LocalGatewayHostname (local_gateway_hostname, alias parent_hostname) is
	// the parent device of a nested (gateway) deployment; it excludes DPS.
	LocalGatewayHostname string `toml:"local_gateway_hostname,omitempty" alias:"parent_hostname"`
	// CloudTimeoutSec (cloud_timeout_sec) is the timeout of cloud calls in
	// seconds, at least 70 (the default).
	CloudTimeoutSec int `toml:"cloud_timeout_sec"`
	// CloudRetries (cloud_retries) is how often a failed cloud call is
	// retried; default 1.
	CloudRetries int `toml:"cloud_retries"`
	// PreferModuleIdentityCache (prefer_module_identity_cache) makes
	// identityd answer module identities from its cache first.
	PreferModuleIdentityCache bool `toml:"prefer_module_identity_cache,omitempty"`
	// AziotMaxRequests ([aziot_max_requests]) is the per-uid concurrent
	// connection limit of each aziot socket; nil means 10 each. Use
	// MaxRequests to read it.
	AziotMaxRequests *MaxRequests `toml:"aziot_max_requests,omitempty"`
	// Provisioning ([provisioning]) is how the device gets its IoT Hub
	// identity; nil when the table is absent.
	Provisioning *Provisioning `toml:"provisioning,omitempty"`
	// LocalID ([localid]) enables local identities; nil when absent.
	LocalID *LocalID `toml:"localid,omitempty"`
	// AziotKeys ([aziot_keys]) are the key-store parameters: only
	// homedir_path, pkcs11_lib_path and pkcs11_base_slot.
	AziotKeys map[string]string `toml:"aziot_keys,omitempty"`
	// PreloadedKeys ([preloaded_keys]) maps key IDs to file:// or pkcs11:
	// URIs of existing keys.
	PreloadedKeys map[string]string `toml:"preloaded_keys,omitempty"`
	// CertIssuance ([cert_issuance]) says how certificates are issued.
	CertIssuance CertIssuance `toml:"cert_issuance,omitempty"`
	// PreloadedCerts ([preloaded_certs]) maps cert IDs to a file:// URI or to
	// a bundle of other cert IDs.
	PreloadedCerts map[string]PreloadedCert `toml:"preloaded_certs,omitempty"`
	// TPM ([tpm]) configures the TPM service.
	TPM TPM `toml:"tpm"`
	// Principals ([[principal]]) are the callers known by uid, for all four
	// aziot services at once.
	Principals []Principal `toml:"principal,omitempty"`
	// Warden ([warden]) holds Warden's own settings.
	Warden Warden `toml:"warden"`
}

func (c *Config) setDefaults() {
	c.CloudTimeoutSec = DefaultCloudTimeoutSec
	c.CloudRetries = DefaultCloudRetries
	c.TPM.setDefaults()
	c.Warden.setDefaults()
}

// MaxRequests is [aziot_max_requests]: when the table is present all four
// keys are required.
type MaxRequests struct {
	Keyd      int `toml:"keyd,required"`
	Certd     int `toml:"certd,required"`
	Tpmd      int `toml:"tpmd,required"`
	Identityd int `toml:"identityd,required"`
}

// MaxRequests returns the per-uid connection limit of service ("keyd",
// "certd", "identityd", "tpmd"); any other service, or no
// [aziot_max_requests] table, gets DefaultMaxRequests.
func (c *Config) MaxRequests(service string) int {
	if m := c.AziotMaxRequests; m != nil {
		switch service {
		case "keyd":
			return m.Keyd
		case "certd":
			return m.Certd
		case "identityd":
			return m.Identityd
		case "tpmd":
			return m.Tpmd
		}
	}
	return DefaultMaxRequests
}

// SocketPath returns the socket of service: Warden.BrokerSocket for
// "broker", otherwise <socket_dir>/<service>.sock (e.g. keyd.sock).
func (c *Config) SocketPath(service string) string {
	if service == "broker" {
		return c.Warden.BrokerSocket
	}
	return filepath.Join(c.Warden.SocketDir, service+".sock")
}

// LocalID is [localid]: local identities are issued under Domain.
type LocalID struct {
	Domain string `toml:"domain,required"`
}

// TPM is [tpm].
type TPM struct {
	// TCTI (tcti) selects the TPM transport, e.g. "device",
	// "device:/dev/tpmrm0", "swtpm:port=2321"; default "device". An explicit
	// "" means the TSS default search.
	TCTI string `toml:"tcti"`
	// AuthKeyIndex (auth_key_index) is the offset of the DPS auth key's
	// persistent handle from 0x81000000, 0..0x7FFFFF; default 0x000100.
	AuthKeyIndex int `toml:"auth_key_index"`
	// HierarchyAuthorization ([tpm.hierarchy_authorization]) holds the
	// endorsement and owner hierarchy passwords (default empty).
	HierarchyAuthorization HierarchyAuthorization `toml:"hierarchy_authorization,omitempty"`
}

func (t *TPM) setDefaults() {
	t.TCTI = DefaultTCTI
	t.AuthKeyIndex = DefaultAuthKeyIndex
}

// AuthKeyHandle is the persistent TPM handle of the DPS auth key.
func (t *TPM) AuthKeyHandle() uint32 {
	return 0x81000000 + uint32(t.AuthKeyIndex)
}

// HierarchyAuthorization is [tpm.hierarchy_authorization].
type HierarchyAuthorization struct {
	Endorsement string `toml:"endorsement,omitempty"`
	Owner       string `toml:"owner,omitempty"`
}

// Principal is one [[principal]]: a caller identified by uid and what it may
// use. It unites the principal tables of keyd, certd and identityd.
type Principal struct {
	// UID (uid) is the caller's uid; required.
	UID uint32 `toml:"uid,required"`
	// Name (name) is the module name for identityd; unique when set.
	Name string `toml:"name,omitempty"`
	// IDType (idtype) lists "device", "module", "local". Nil (key absent)
	// makes the principal a full-rights daemon for identityd; an empty array
	// makes it a host process with no identity rights.
	IDType []string `toml:"idtype,omitempty"`
	// LocalID (localid) are the options of the principal's local identity;
	// only with "local" in IDType.
	LocalID *PrincipalLocalID `toml:"localid,omitempty"`
	// Keys (keys) are the key IDs the caller may use (keyd); "*" wildcards.
	Keys []string `toml:"keys,omitempty"`
	// Certs (certs) are the cert IDs the caller may modify (certd).
	Certs []string `toml:"certs,omitempty"`
}

// HasIDType reports whether t is in p.IDType.
func (p *Principal) HasIDType(t string) bool {
	for _, v := range p.IDType {
		if v == t {
			return true
		}
	}
	return false
}

// PrincipalLocalID is a principal's localid = { type = "x509", attributes }.
type PrincipalLocalID struct {
	// Type (type) is the credential type; only "x509".
	Type string `toml:"type,required"`
	// Attributes (attributes) is "client" (the default) or "server".
	Attributes string `toml:"attributes"`
}

func (l *PrincipalLocalID) setDefaults() { l.Attributes = "client" }

// Warden is [warden], Warden's own settings.
type Warden struct {
	// StateDir (state_dir) holds keys, certs, backups, the revocation list
	// and the module cache; default /var/lib/warden.
	StateDir string `toml:"state_dir"`
	// SocketDir (socket_dir) holds the aziot sockets keyd.sock, certd.sock,
	// identityd.sock and tpmd.sock; default /run/warden.
	SocketDir string `toml:"socket_dir"`
	// BrokerSocket (broker_socket) is Warden's own API socket; default
	// <socket_dir>/broker.sock.
	BrokerSocket string `toml:"broker_socket"`
	// SocketGroup (socket_group) is the group name or numeric gid that owns
	// the sockets; empty keeps the daemon's group.
	SocketGroup string `toml:"socket_group,omitempty"`
	// Policy ([warden.policy]) configures the policy engine.
	Policy Policy `toml:"policy,omitempty"`
	// Tokens ([warden.tokens]) configures capability tokens.
	Tokens Tokens `toml:"tokens"`
	// Modules ([warden.modules.<name>]) are the WASM provisioning modules.
	Modules map[string]Module `toml:"modules,omitempty"`
}

func (w *Warden) setDefaults() {
	w.StateDir = DefaultStateDir
	w.SocketDir = DefaultSocketDir
	w.Tokens.setDefaults()
}

// Policy is [warden.policy].
type Policy struct {
	// Dir (dir) is the policy directory (*.rego, data.json/data.yaml); ""
	// means the built-in default policy.
	Dir string `toml:"dir,omitempty"`
	// DecisionLog (decision_log) is the decision log file; "" means none.
	DecisionLog string `toml:"decision_log,omitempty"`
	// DecisionLogFailClosed (decision_log_fail_closed) denies requests when
	// the decision log cannot be written, instead of allowing them and
	// counting the loss.
	DecisionLogFailClosed bool `toml:"decision_log_fail_closed,omitempty"`
}

// Tokens is [warden.tokens].
type Tokens struct {
	// DefaultTTL (default_ttl) is the lifetime of a token minted without
	// ttlSeconds; default 15m.
	DefaultTTL Duration `toml:"default_ttl"`
	// MaxTTL (max_ttl) caps every token's lifetime; default 1h.
	MaxTTL Duration `toml:"max_ttl"`
}

func (t *Tokens) setDefaults() {
	t.DefaultTTL = Duration{15 * time.Minute}
	t.MaxTTL = Duration{time.Hour}
}

// Module is [warden.modules.<name>], a WASM provisioning module. At least
// one of SHA256 and Signature pins its integrity.
type Module struct {
	// Path (path) is the absolute path of the .wasm file; required.
	Path string `toml:"path,required"`
	// SHA256 (sha256) is the hex SHA-256 digest the file must have.
	SHA256 string `toml:"sha256,omitempty"`
	// Signature (signature) is the detached Ed25519 signature of the whole
	// file: base64 of its 64 bytes, or the absolute path of a file that
	// holds them (raw or base64). It needs TrustedKeys.
	Signature string `toml:"signature,omitempty"`
	// TrustedKeys (trusted_keys) are the Ed25519 public keys a signature
	// may be made by: each base64 of the 32-byte key, PEM text, or the
	// absolute path of a PEM ("PUBLIC KEY") or raw key file.
	TrustedKeys []string `toml:"trusted_keys,omitempty"`
	// MemoryLimitMB (memory_limit_mb) caps the instance's memory; 0 means
	// the host's default.
	MemoryLimitMB int `toml:"memory_limit_mb,omitempty"`
	// Timeout (timeout) is the wall-clock limit of one job; 0 means the
	// host's default.
	Timeout Duration `toml:"timeout,omitempty"`
	// Egress (egress) lists the host[:port] the module may reach.
	Egress []string `toml:"egress,omitempty"`
	// MaxHostCalls (max_host_calls) caps the host calls of one job; 0
	// means the host's default.
	MaxHostCalls int `toml:"max_host_calls,omitempty"`
	// MaxOutputBytes (max_output_bytes) caps the result of one job; 0
	// means the host's default.
	MaxOutputBytes int `toml:"max_output_bytes,omitempty"`
}
