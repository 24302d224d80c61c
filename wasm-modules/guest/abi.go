// Package guest is the guest side of Warden's WASM module ABI, and its one
// definition: the host (wasm-modules/host) imports the same types.
//
// A module is a Go program (package main) built as a WASI preview-1
// command, GOOS=wasip1 GOARCH=wasm go build, whose main calls Run:
//
//	func main() { guest.Run(enroll) }
//
//	func enroll(ctx context.Context, job json.RawMessage) (any, error) {
//		resp, err := guest.HTTPDo(ctx, &guest.HTTPRequest{Method: "GET", URL: "https://est.example/.well-known/est/cacerts"})
//		…
//		return result, nil
//	}
//
// The host starts a fresh instance per job: the job's JSON is the module's
// standard input, Run writes the handler's result (or error) as one JSON
// Envelope on standard output, and standard error goes to the broker's log.
// Effects go through host calls (HTTPDo, Sign, GetCert, …): each is one
// call of the import warden.call with a JSON request, one policy decision on
// the host, and counts toward the job's host-call limit.
//
// The same source also builds natively (without GOOS=wasip1): Invoke then
// runs a handler in-process against any Caller, such as the host's own
// in-process implementation of the host calls (host.Host.RunNative), so a
// module can be tested and benchmarked natively without changing its code.
package guest

import (
	"encoding/json"
	"fmt"
)

// ImportModule is the WASM import module of the host calls.
const ImportModule = "warden"

// The host calls. Each name is also input.action.operation of the host
// call's policy decision (action.service "modules").
const (
	// OpHTTPDo performs an HTTP(S) request (HTTPRequest → HTTPResponse).
	OpHTTPDo = "http.do"
	// OpKeysSign signs a digest with a key-store key (SignRequest → SignResponse).
	OpKeysSign = "keys.sign"
	// OpKeysCreateKeyPair creates a key pair unless it exists
	// (CreateKeyPairRequest → PublicKeyResponse).
	OpKeysCreateKeyPair = "keys.create_keypair"
	// OpKeysPublic returns a key pair's public key (KeyRequest → PublicKeyResponse).
	OpKeysPublic = "keys.public"
	// OpKeysHMAC computes HMAC-SHA256 with a key-store symmetric key, e.g.
	// a SAS token's signature (HMACRequest → HMACResponse). The key never
	// enters the module.
	OpKeysHMAC = "keys.hmac"
	// OpCertsGet reads a certificate (CertRequest → CertResponse).
	OpCertsGet = "certs.get"
	// OpCertsPut writes a certificate (CertPutRequest → Empty).
	OpCertsPut = "certs.put"
	// OpTPMKeys returns the TPM's EK and SRK (Empty → TPMKeysResponse).
	OpTPMKeys = "tpm.keys"
	// OpTPMImportAuthKey imports a DPS auth key blob (TPMImportRequest → Empty).
	OpTPMImportAuthKey = "tpm.import_auth_key"
	// OpTPMSign signs with the TPM auth key, HMAC-SHA256 (TPMSignRequest → TPMSignResponse).
	OpTPMSign = "tpm.sign"
	// OpClockSleep sleeps, bounded by the host and the job's deadline
	// (SleepRequest → Empty).
	OpClockSleep = "clock.sleep"
	// OpLog writes one structured log line (LogRequest → Empty).
	OpLog = "log"
)

// Ops lists every host call, in the order of the table in docs/modules.md.
var Ops = []string{
	OpHTTPDo, OpKeysSign, OpKeysCreateKeyPair, OpKeysPublic, OpKeysHMAC, OpCertsGet, OpCertsPut,
	OpTPMKeys, OpTPMImportAuthKey, OpTPMSign, OpClockSleep, OpLog,
}

// Error codes that the host gives host-call errors. A module may use these
// or its own codes in the errors it returns.
const (
	// CodeDenied: the policy or the module's egress allowlist refused the call.
	CodeDenied = "denied"
	// CodeInvalid: the request is malformed or names something invalid.
	CodeInvalid = "invalid"
	// CodeNotFound: the key, certificate or TPM object does not exist.
	CodeNotFound = "not_found"
	// CodeUnavailable: the host has no such facility (e.g. no TPM), or a
	// peer could not be reached.
	CodeUnavailable = "unavailable"
	// CodeDeadline: the job's deadline has passed or would pass first.
	CodeDeadline = "deadline"
	// CodeFailed: the operation failed on the host (an I/O or crypto error).
	CodeFailed = "failed"
	// CodeModule is the code of an error a handler returns that is not an *Error.
	CodeModule = "module"
	// CodePanic is the code of a handler that panicked.
	CodePanic = "panic"
)

// Error is an error of the ABI: a host call's refusal or failure, or the
// error a job's handler returned. It travels as {"code", "message"}.
type Error struct {
	// Code classifies the error: one of the Code constants or a module's own.
	Code string `json:"code"`
	// Message says what happened, for people.
	Message string `json:"message"`
}

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Envelope is what Run writes on standard output: exactly one of Result
// (the handler's value as JSON; "null" when it returned nil) and Error.
type Envelope struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// HTTPRequest is the request of http.do. The host does the request, TLS
// included; the module's egress allowlist must contain the URL's host[:port].
// Redirects are not followed: a 3xx is returned as it is.
type HTTPRequest struct {
	// Method is the HTTP method, e.g. "GET" or "POST".
	Method string `json:"method"`
	// URL is an absolute http:// or https:// URL.
	URL string `json:"url"`
	// Header holds the request headers (canonical or not).
	Header map[string][]string `json:"header,omitempty"`
	// Body is the request body (base64 in JSON).
	Body []byte `json:"body,omitempty"`
	// TLS configures client authentication and trust; nil means the
	// system's trust store and no client certificate.
	TLS *TLSOptions `json:"tls,omitempty"`
	// MaxResponseBytes caps the response body; 0 means the host's limit,
	// and a larger value is lowered to it. A longer body fails the call.
	MaxResponseBytes int64 `json:"max_response_bytes,omitempty"`
}

// TLSOptions are the TLS settings of an http.do request, by store ID: the
// private key stays in the key store and is used through the host.
type TLSOptions struct {
	// ClientCertID is the cert store ID of the client certificate chain
	// (leaf first). It needs ClientKeyID.
	ClientCertID string `json:"client_cert_id,omitempty"`
	// ClientKeyID is the key store ID of the client certificate's key pair.
	ClientKeyID string `json:"client_key_id,omitempty"`
	// TrustCertIDs are cert store IDs of trust anchors (PEM bundles).
	TrustCertIDs []string `json:"trust_cert_ids,omitempty"`
	// TrustPEM holds more trust anchors as PEM text.
	TrustPEM string `json:"trust_pem,omitempty"`
	// SystemRoots adds the system's trust store to TrustCertIDs and
	// TrustPEM. Without any of the three, the system's store is used.
	SystemRoots bool `json:"system_roots,omitempty"`
	// ServerName overrides the name verified in the server's certificate.
	ServerName string `json:"server_name,omitempty"`
	// InsecureSkipVerify skips server verification, for an RFC 7030
	// bootstrap fetch of /cacerts that the module verifies out of band
	// (PeerCertificates). The policy sees it in the decision's details.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// HTTPResponse is the response of http.do.
type HTTPResponse struct {
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Header holds the response headers, canonical keys.
	Header map[string][]string `json:"header,omitempty"`
	// Body is the response body (base64 in JSON).
	Body []byte `json:"body,omitempty"`
	// PeerCertificates is the server's certificate chain (DER, leaf
	// first) of an https request.
	PeerCertificates [][]byte `json:"peer_certificates,omitempty"`
}

// SignRequest is the request of keys.sign.
type SignRequest struct {
	// KeyID is the key store ID of the key pair.
	KeyID string `json:"key_id"`
	// Digest is the digest to sign (base64 in JSON).
	Digest []byte `json:"digest"`
	// Hash names the digest's hash: "SHA-256", "SHA-384", "SHA-512", or
	// "" to sign the bytes as given (RSA PKCS#1 v1.5 without DigestInfo).
	Hash string `json:"hash,omitempty"`
	// PSS selects RSA-PSS (for RSA keys) with SaltLength (0: as long as
	// possible when signing; -1: the hash's length).
	PSS        bool `json:"pss,omitempty"`
	SaltLength int  `json:"salt_length,omitempty"`
}

// SignResponse is the response of keys.sign: an ASN.1 DER signature for
// ECDSA, the raw signature for RSA.
type SignResponse struct {
	Signature []byte `json:"signature"`
}

// KeyRequest names a key pair (keys.public).
type KeyRequest struct {
	KeyID string `json:"key_id"`
}

// HMACRequest is the request of keys.hmac: HMAC-SHA256 of Message with
// symmetric key KeyID in the key store.
type HMACRequest struct {
	KeyID string `json:"key_id"`
	// Message is the data to authenticate (base64 in JSON).
	Message []byte `json:"message"`
}

// HMACResponse is the response of keys.hmac: the 32-byte HMAC-SHA256
// (base64 in JSON).
type HMACResponse struct {
	Signature []byte `json:"signature"`
}

// CreateKeyPairRequest is the request of keys.create_keypair: the first
// algorithm the key store supports is used; an existing key pair is kept.
type CreateKeyPairRequest struct {
	KeyID string `json:"key_id"`
	// Algorithms are "ec-p256", "rsa-2048", "rsa-4096"; empty means ["ec-p256"].
	Algorithms []string `json:"algorithms,omitempty"`
}

// PublicKeyResponse carries a public key as PKIX DER (base64 in JSON).
type PublicKeyResponse struct {
	PublicKey []byte `json:"public_key"`
}

// CertRequest names a certificate (certs.get).
type CertRequest struct {
	CertID string `json:"cert_id"`
}

// CertResponse is the PEM of a certificate or chain.
type CertResponse struct {
	PEM string `json:"pem"`
}

// CertPutRequest writes a certificate or chain (certs.put).
type CertPutRequest struct {
	CertID string `json:"cert_id"`
	PEM    string `json:"pem"`
}

// TPMKeysResponse holds the marshalled TPM2B_PUBLIC of the EK and the SRK.
type TPMKeysResponse struct {
	EndorsementKey []byte `json:"endorsement_key"`
	StorageRootKey []byte `json:"storage_root_key"`
}

// TPMImportRequest is the DPS activation blob (authenticationKey, decoded).
type TPMImportRequest struct {
	Key []byte `json:"key"`
}

// TPMSignRequest is the data to HMAC with the TPM auth key.
type TPMSignRequest struct {
	Data []byte `json:"data"`
}

// TPMSignResponse is the HMAC-SHA256 of TPMSignRequest.Data.
type TPMSignResponse struct {
	Digest []byte `json:"digest"`
}

// SleepRequest is the request of clock.sleep.
type SleepRequest struct {
	// Milliseconds to sleep. The host refuses, without sleeping, a sleep
	// longer than its maximum (CodeInvalid) or one that would outlast the
	// job's deadline (CodeDeadline), so a module can return before it is
	// stopped.
	Milliseconds int64 `json:"ms"`
}

// LogRequest is one structured log line (log). The host adds the module's
// name and digest and caps the bytes a job may log.
type LogRequest struct {
	// Level is "debug", "info", "warn" or "error" ("" is info).
	Level string `json:"level,omitempty"`
	// Msg is the message.
	Msg string `json:"msg"`
	// Attrs are the line's attributes.
	Attrs map[string]any `json:"attrs,omitempty"`
}

// Empty is the request or response of host calls without parameters or results.
type Empty struct{}
