// Package estjob is the contract between certd and the EST module
// (wasm-modules/est): the job certd gives the module and the result the
// module returns, both JSON. It has no dependencies so that the module
// (GOOS=wasip1) and the broker share one definition.
package estjob

// Operations of a job.
const (
	// OpEnroll enrolls CSR with simpleenroll, after the bootstrap flow
	// when the identity certificate does not exist yet (aziot-api §5.4).
	OpEnroll = "enroll"
	// OpReenroll renews the identity certificate with simplereenroll,
	// authenticated by that certificate (RFC 7030 §4.2.2).
	OpReenroll = "reenroll"
	// OpCACerts fetches the CA certificates only.
	OpCACerts = "cacerts"
)

// ErrorCodes of the module (guest.Error codes), besides the host's.
const (
	// CodeDeferred: the server answered 202 with a Retry-After longer
	// than the job's budget; Error.Message carries the seconds.
	CodeDeferred = "est_deferred"
	// CodeServer: the server answered with an error status.
	CodeServer = "est_server"
	// CodeResponse: the server's answer could not be understood.
	CodeResponse = "est_response"
	// CodeConfig: the job cannot be done as configured (e.g. no identity
	// certificate and no bootstrap certificate).
	CodeConfig = "est_config"
)

// Job is one EST operation.
type Job struct {
	// Op is OpEnroll, OpReenroll or OpCACerts.
	Op string `json:"op"`
	// URL is the EST base, https://host[:port]/.well-known/est[/label];
	// the operation's name is appended after a "/".
	URL string `json:"url"`
	// CSR is the PKCS#10 request to enroll (DER, base64 in JSON).
	CSR []byte `json:"csr,omitempty"`

	// Username and Password are HTTP Basic credentials, sent when set.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// IdentityCertID and IdentityKeyID are the EST identity credential
	// (cert store and key store IDs), used as the TLS client certificate.
	IdentityCertID string `json:"identity_cert_id,omitempty"`
	IdentityKeyID  string `json:"identity_key_id,omitempty"`
	// BootstrapCertID and BootstrapKeyID are the bootstrap credential that
	// obtains the identity certificate when it does not exist yet.
	BootstrapCertID string `json:"bootstrap_cert_id,omitempty"`
	BootstrapKeyID  string `json:"bootstrap_key_id,omitempty"`
	// IdentitySubject is the DER subject of the identity CSR of the
	// bootstrap flow (the enrolled CSR's subject when empty).
	IdentitySubject []byte `json:"identity_subject,omitempty"`

	// TrustCertIDs are cert store IDs of the server's trust anchors;
	// SystemRoots adds the system store (used alone when no ID is given).
	TrustCertIDs []string `json:"trust_cert_ids,omitempty"`
	SystemRoots  bool     `json:"system_roots,omitempty"`

	// MaxWaitSeconds bounds the total time spent waiting on 202 +
	// Retry-After answers; 0 means no waiting (a 202 fails the job with
	// CodeDeferred).
	MaxWaitSeconds int `json:"max_wait_seconds,omitempty"`
}

// Result is what the module returns.
type Result struct {
	// Certs are the enrolled certificate and any chain the server sent
	// with it (DER, leaf first).
	Certs [][]byte `json:"certs,omitempty"`
	// CACerts are the server's CA certificates (/cacerts), DER.
	CACerts [][]byte `json:"ca_certs,omitempty"`
	// IdentityIssued is set when the bootstrap flow enrolled and stored
	// the identity certificate (certd then schedules its renewal).
	IdentityIssued bool `json:"identity_issued,omitempty"`
	// Deferrals counts the 202 answers waited out.
	Deferrals int `json:"deferrals,omitempty"`
}
