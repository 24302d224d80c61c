package guest

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Call makes host call op with req marshalled as JSON and unmarshals the
// response into resp (which may be nil). The typed functions below wrap it.
func Call(ctx context.Context, op string, req, resp any) error {
	in, err := json.Marshal(req)
	if err != nil {
		return &Error{Code: CodeInvalid, Message: fmt.Sprintf("host call %s: marshal the request: %v", op, err)}
	}
	out, err := callerFrom(ctx).Call(ctx, op, in)
	if err != nil {
		return err
	}
	if resp == nil || len(out) == 0 {
		return nil
	}
	if err := json.Unmarshal(out, resp); err != nil {
		return &Error{Code: CodeFailed, Message: fmt.Sprintf("host call %s: decode the response: %v", op, err)}
	}
	return nil
}

// HTTPDo performs req through the host (http.do).
func HTTPDo(ctx context.Context, req *HTTPRequest) (*HTTPResponse, error) {
	var resp HTTPResponse
	if err := Call(ctx, OpHTTPDo, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Sign signs digest with key pair keyID in the key store (keys.sign), as
// crypto.Signer.Sign does: opts gives the hash, *rsa.PSSOptions selects
// RSA-PSS. The private key never enters the module.
func Sign(ctx context.Context, keyID string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req := SignRequest{KeyID: keyID, Digest: digest}
	if opts != nil {
		h, err := HashName(opts.HashFunc())
		if err != nil {
			return nil, err
		}
		req.Hash = h
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		req.PSS = true
		req.SaltLength = pss.SaltLength
	}
	var resp SignResponse
	if err := Call(ctx, OpKeysSign, &req, &resp); err != nil {
		return nil, err
	}
	return resp.Signature, nil
}

// HMAC returns HMAC-SHA256 of msg with symmetric key keyID in the key
// store (keys.hmac), e.g. the signature of a SAS token. The key never
// enters the module.
func HMAC(ctx context.Context, keyID string, msg []byte) ([]byte, error) {
	var resp HMACResponse
	if err := Call(ctx, OpKeysHMAC, &HMACRequest{KeyID: keyID, Message: msg}, &resp); err != nil {
		return nil, err
	}
	return resp.Signature, nil
}

// HashName is the ABI name of h ("" for 0).
func HashName(h crypto.Hash) (string, error) {
	switch h {
	case 0:
		return "", nil
	case crypto.SHA256:
		return "SHA-256", nil
	case crypto.SHA384:
		return "SHA-384", nil
	case crypto.SHA512:
		return "SHA-512", nil
	}
	return "", &Error{Code: CodeInvalid, Message: fmt.Sprintf("hash %v is not supported (SHA-256, SHA-384, SHA-512)", h)}
}

// ParseHashName is the inverse of HashName.
func ParseHashName(s string) (crypto.Hash, error) {
	switch s {
	case "":
		return 0, nil
	case "SHA-256":
		return crypto.SHA256, nil
	case "SHA-384":
		return crypto.SHA384, nil
	case "SHA-512":
		return crypto.SHA512, nil
	}
	return 0, &Error{Code: CodeInvalid, Message: fmt.Sprintf("unknown hash %q (SHA-256, SHA-384, SHA-512)", s)}
}

// PublicKey returns the public key of key pair keyID (keys.public).
func PublicKey(ctx context.Context, keyID string) (crypto.PublicKey, error) {
	var resp PublicKeyResponse
	if err := Call(ctx, OpKeysPublic, &KeyRequest{KeyID: keyID}, &resp); err != nil {
		return nil, err
	}
	return parsePublic(resp.PublicKey)
}

// CreateKeyPair creates key pair keyID with the first of algorithms the key
// store supports ("ec-p256", "rsa-2048", "rsa-4096"; none means ec-p256),
// unless it exists, and returns its public key (keys.create_keypair).
func CreateKeyPair(ctx context.Context, keyID string, algorithms ...string) (crypto.PublicKey, error) {
	var resp PublicKeyResponse
	if err := Call(ctx, OpKeysCreateKeyPair, &CreateKeyPairRequest{KeyID: keyID, Algorithms: algorithms}, &resp); err != nil {
		return nil, err
	}
	return parsePublic(resp.PublicKey)
}

func parsePublic(der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, &Error{Code: CodeFailed, Message: "parse the public key from the host: " + err.Error()}
	}
	return pub, nil
}

// Signer returns key pair keyID as a crypto.Signer whose Sign is a
// keys.sign host call made with ctx: use it for x509.CreateCertificateRequest
// and the like. It reads the public key once (keys.public).
func Signer(ctx context.Context, keyID string) (crypto.Signer, error) {
	pub, err := PublicKey(ctx, keyID)
	if err != nil {
		return nil, err
	}
	return &keySigner{ctx: ctx, id: keyID, pub: pub}, nil
}

type keySigner struct {
	ctx context.Context
	id  string
	pub crypto.PublicKey
}

// Public returns the key pair's public key.
func (s *keySigner) Public() crypto.PublicKey { return s.pub }

// Sign is a keys.sign host call.
func (s *keySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return Sign(s.ctx, s.id, digest, opts)
}

// GetCert returns the PEM of certificate certID (certs.get).
func GetCert(ctx context.Context, certID string) (string, error) {
	var resp CertResponse
	if err := Call(ctx, OpCertsGet, &CertRequest{CertID: certID}, &resp); err != nil {
		return "", err
	}
	return resp.PEM, nil
}

// PutCert writes pem as certificate certID (certs.put).
func PutCert(ctx context.Context, certID, pem string) error {
	return Call(ctx, OpCertsPut, &CertPutRequest{CertID: certID, PEM: pem}, nil)
}

// TPMKeys returns the marshalled TPM2B_PUBLIC of the TPM's EK and SRK (tpm.keys).
func TPMKeys(ctx context.Context) (*TPMKeysResponse, error) {
	var resp TPMKeysResponse
	if err := Call(ctx, OpTPMKeys, Empty{}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// TPMImportAuthKey imports a DPS activation blob as the TPM auth key
// (tpm.import_auth_key).
func TPMImportAuthKey(ctx context.Context, blob []byte) error {
	return Call(ctx, OpTPMImportAuthKey, &TPMImportRequest{Key: blob}, nil)
}

// TPMSign returns HMAC-SHA256 of data with the TPM auth key (tpm.sign).
func TPMSign(ctx context.Context, data []byte) ([]byte, error) {
	var resp TPMSignResponse
	if err := Call(ctx, OpTPMSign, &TPMSignRequest{Data: data}, &resp); err != nil {
		return nil, err
	}
	return resp.Digest, nil
}

// Sleep waits d on the host (clock.sleep). It fails without sleeping with
// CodeDeadline when d would outlast the job's deadline, and with
// CodeInvalid when d exceeds the host's longest sleep. (time.Sleep works
// in a module too, but cannot tell the deadline is near.)
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return &Error{Code: CodeDeadline, Message: err.Error()}
	}
	return Call(ctx, OpClockSleep, &SleepRequest{Milliseconds: max(1, d.Milliseconds())}, nil)
}
