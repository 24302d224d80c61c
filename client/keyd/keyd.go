// Package keyd is a client of the aziot Keys Service API (keyd.sock) for host
// processes: it creates, loads, moves and deletes keys by ID, and signs,
// encrypts and decrypts with key handles, without ever seeing private keys.
// Signer adapts a key-pair handle to crypto.Signer (for crypto/tls, x509),
// the way aziot's openssl engine does.
package keyd

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"

	"github.com/warden-iot/warden/client"
)

// DefaultAPIVersion is the api-version the client sends unless told otherwise.
const DefaultAPIVersion = "2021-05-01"

// Algorithms for Sign.
const (
	// ECDSA signs a caller-computed digest with an EC key pair (DER output).
	ECDSA = "ECDSA"
	// HMACSHA256 signs a whole message with a symmetric or derived key.
	HMACSHA256 = "HMAC-SHA256"
)

// Algorithms for Encrypt and Decrypt.
const (
	// AEAD is AES-GCM with a symmetric or derived key; the ciphertext is
	// aziot's 0x02 || ct || tag framing.
	AEAD = "AEAD"
	// RSAPKCS1 is the RSA private-key operation with PKCS#1 v1.5 type-1
	// padding (a signature primitive, "private encrypt").
	RSAPKCS1 = "RSA-PKCS1"
	// RSANoPadding is the raw RSA private-key operation.
	RSANoPadding = "RSA-NO-PADDING"
)

// Names of the public parameters of a key pair (Parameter).
const (
	ParamAlgorithm   = "algorithm"
	ParamECCurveOID  = "ec-curve-oid"
	ParamECPoint     = "ec-point"
	ParamRSAModulus  = "rsa-modulus"
	ParamRSAExponent = "rsa-exponent"
)

// MaxConcurrency is how many requests a Client (and the copies WithToken
// makes) has in flight at once; more wait their turn. keyd, as aziot,
// closes without an answer a uid's connections beyond its max_requests
// (default 10), and each request in flight holds a connection.
const MaxConcurrency = 8

// Client calls keyd over its Unix socket. It is safe for concurrent use and
// keeps connections alive between calls.
type Client struct {
	c   *client.Client
	sem chan struct{} // shared with the copies WithToken makes
}

// New returns a client of the keyd socket at path using DefaultAPIVersion.
func New(path string) *Client { return NewVersion(path, DefaultAPIVersion) }

// NewVersion returns a client of the keyd socket at path that sends apiVersion.
func NewVersion(path, apiVersion string) *Client {
	return &Client{c: client.New(path, apiVersion), sem: make(chan struct{}, MaxConcurrency)}
}

// WithToken returns a copy of c that sends token as a bearer capability
// token. The copy shares c's connections and concurrency limit.
func (c *Client) WithToken(token string) *Client { return &Client{c: c.c.WithToken(token), sem: c.sem} }

// do is client.Do within the concurrency limit.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	return c.c.Do(ctx, method, path, in, out)
}

// post is client.Raw's POST within the concurrency limit.
func (c *Client) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	return c.c.Raw(ctx, http.MethodPost, path, body)
}

// Close releases idle connections.
func (c *Client) Close() { c.c.Close() }

// Error is a non-2xx answer of keyd: its status and message. It is the
// error of package client.
type Error = client.Error

type handleResponse struct {
	KeyHandle string `json:"keyHandle"`
}

type handleRequest struct {
	KeyHandle string `json:"keyHandle"`
}

// CreateKeyPairIfNotExists creates the key pair id unless it exists and
// returns its handle. preferredAlgorithms is aziot's ":"-separated list
// ("ec-p256", "rsa-2048", "rsa-4096", "*"); "" lets keyd choose.
func (c *Client) CreateKeyPairIfNotExists(ctx context.Context, id, preferredAlgorithms string) (string, error) {
	req := struct {
		KeyID               string  `json:"keyId"`
		PreferredAlgorithms *string `json:"preferredAlgorithms"`
	}{KeyID: id}
	if preferredAlgorithms != "" {
		req.PreferredAlgorithms = &preferredAlgorithms
	}
	var resp handleResponse
	if err := c.do(ctx, http.MethodPost, "/keypair", req, &resp); err != nil {
		return "", fmt.Errorf("keyd: create key pair %q: %w", id, err)
	}
	return resp.KeyHandle, nil
}

// LoadKeyPair returns a handle for the existing key pair id.
func (c *Client) LoadKeyPair(ctx context.Context, id string) (string, error) {
	var resp handleResponse
	if err := c.do(ctx, http.MethodGet, "/keypair/"+url.PathEscape(id), nil, &resp); err != nil {
		return "", fmt.Errorf("keyd: load key pair %q: %w", id, err)
	}
	return resp.KeyHandle, nil
}

// MoveKeyPair moves the key pair from to the ID to, replacing any key pair there.
func (c *Client) MoveKeyPair(ctx context.Context, from, to string) error {
	req := struct {
		From string `json:"from"`
	}{from}
	if err := c.do(ctx, http.MethodPost, "/keypair/"+url.PathEscape(to), req, nil); err != nil {
		return fmt.Errorf("keyd: move key pair %q to %q: %w", from, to, err)
	}
	return nil
}

// DeleteKeyPair deletes the key pair of handle (absent is not an error).
func (c *Client) DeleteKeyPair(ctx context.Context, handle string) error {
	if err := c.do(ctx, http.MethodDelete, "/keypair", handleRequest{handle}, nil); err != nil {
		return fmt.Errorf("keyd: delete key pair: %w", err)
	}
	return nil
}

type keyRequest struct {
	KeyID    string  `json:"keyId"`
	Usage    string  `json:"usage"`
	KeyBytes *string `json:"keyBytes"`
}

// CreateKey creates the symmetric key id unless it exists and returns its
// handle. usage is aziot's comma-separated list of "derive", "sign", "encrypt".
func (c *Client) CreateKey(ctx context.Context, id, usage string) (string, error) {
	var resp handleResponse
	if err := c.do(ctx, http.MethodPost, "/key", keyRequest{KeyID: id, Usage: usage}, &resp); err != nil {
		return "", fmt.Errorf("keyd: create key %q: %w", id, err)
	}
	return resp.KeyHandle, nil
}

// ImportKey stores key as the symmetric key id, replacing any key there.
func (c *Client) ImportKey(ctx context.Context, id string, key []byte, usage string) (string, error) {
	b := base64.StdEncoding.EncodeToString(key)
	var resp handleResponse
	if err := c.do(ctx, http.MethodPost, "/key", keyRequest{KeyID: id, Usage: usage, KeyBytes: &b}, &resp); err != nil {
		return "", fmt.Errorf("keyd: import key %q: %w", id, err)
	}
	return resp.KeyHandle, nil
}

// LoadKey returns a handle for the existing symmetric key id.
func (c *Client) LoadKey(ctx context.Context, id string) (string, error) {
	var resp handleResponse
	if err := c.do(ctx, http.MethodGet, "/key/"+url.PathEscape(id), nil, &resp); err != nil {
		return "", fmt.Errorf("keyd: load key %q: %w", id, err)
	}
	return resp.KeyHandle, nil
}

// DeleteKey deletes the symmetric key of handle (absent is not an error).
func (c *Client) DeleteKey(ctx context.Context, handle string) error {
	if err := c.do(ctx, http.MethodDelete, "/key", handleRequest{handle}, nil); err != nil {
		return fmt.Errorf("keyd: delete key: %w", err)
	}
	return nil
}

// Parameter returns the public parameter name of a key pair (see the
// Param constants): "ECDSA" or "RSA" for ParamAlgorithm, base64 otherwise.
func (c *Client) Parameter(ctx context.Context, handle, name string) (string, error) {
	var resp struct {
		Value string `json:"value"`
	}
	if err := c.do(ctx, http.MethodPost, "/parameters/"+url.PathEscape(name), handleRequest{handle}, &resp); err != nil {
		return "", fmt.Errorf("keyd: parameter %q: %w", name, err)
	}
	return resp.Value, nil
}

// DeriveKey returns a handle for HMAC-SHA256(base key, data); nothing is stored.
func (c *Client) DeriveKey(ctx context.Context, baseHandle string, data []byte) (string, error) {
	req := struct {
		BaseKeyHandle  string `json:"baseKeyHandle"`
		DerivationData []byte `json:"derivationData"`
	}{baseHandle, nonNil(data)}
	var resp handleResponse
	if err := c.do(ctx, http.MethodPost, "/derivedkey", req, &resp); err != nil {
		return "", fmt.Errorf("keyd: derive key: %w", err)
	}
	return resp.KeyHandle, nil
}

// ExportDerivedKey returns the bytes of the derived key of handle.
func (c *Client) ExportDerivedKey(ctx context.Context, handle string) ([]byte, error) {
	var resp struct {
		Key []byte `json:"key"`
	}
	if err := c.do(ctx, http.MethodPost, "/derivedkey/export", handleRequest{handle}, &resp); err != nil {
		return nil, fmt.Errorf("keyd: export derived key: %w", err)
	}
	return resp.Key, nil
}

// Sign signs data with handle: a digest for ECDSA, a whole message for
// HMACSHA256.
func (c *Client) Sign(ctx context.Context, handle, algorithm string, data []byte) ([]byte, error) {
	sig, err := c.postBytes(ctx, "/sign", signBody(handle, algorithm, data), "signature")
	if err != nil {
		return nil, fmt.Errorf("keyd: sign %s: %w", algorithm, err)
	}
	return sig, nil
}

// Mechanism is the algorithm of Encrypt and Decrypt, with AEAD's parameters.
type Mechanism struct {
	// Algorithm is AEAD, RSAPKCS1 or RSANoPadding.
	Algorithm string
	// IV and AAD are AEAD's nonce and additional data.
	IV, AAD []byte
}

// Encrypt encrypts plaintext with handle. For AEAD the result is
// 0x02 || ct || tag; the RSA mechanisms are private-key operations whose
// result is as long as the modulus.
func (c *Client) Encrypt(ctx context.Context, handle string, m Mechanism, plaintext []byte) ([]byte, error) {
	ct, err := c.postBytes(ctx, "/encrypt", cryptBody(handle, m, "plaintext", plaintext), "ciphertext")
	if err != nil {
		return nil, fmt.Errorf("keyd: encrypt %s: %w", m.Algorithm, err)
	}
	return ct, nil
}

// Decrypt decrypts an AEAD ciphertext made by Encrypt (or IoT Edge 1.1's v1
// format, for file keys).
func (c *Client) Decrypt(ctx context.Context, handle string, m Mechanism, ciphertext []byte) ([]byte, error) {
	pt, err := c.postBytes(ctx, "/decrypt", cryptBody(handle, m, "ciphertext", ciphertext), "plaintext")
	if err != nil {
		return nil, fmt.Errorf("keyd: decrypt %s: %w", m.Algorithm, err)
	}
	return pt, nil
}

// nonNil makes encoding/json send "" rather than null for an empty slice.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
