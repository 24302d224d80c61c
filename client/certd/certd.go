// Package certd is a client of the aziot Certificates Service API
// (certd.sock, api-version 2020-09-01) for host processes: issue a
// certificate from a CSR, import, read and delete certificates by ID. IDs
// are percent-encoded in paths ("/" as %2F), which Warden accepts.
package certd

import (
	"context"
	"net/http"
	"net/url"

	"github.com/warden-iot/warden/client"
)

// APIVersion is certd's only api-version.
const APIVersion = "2020-09-01"

// Client calls certd over its Unix socket. It is safe for concurrent use.
type Client struct{ c *client.Client }

// New returns a client of the certd socket at path.
func New(path string) *Client { return &Client{c: client.New(path, APIVersion)} }

// WithToken returns a copy of c that sends a capability token.
func (c *Client) WithToken(token string) *Client { return &Client{c: c.c.WithToken(token)} }

// Close releases idle connections.
func (c *Client) Close() { c.c.Close() }

// Issuer is an explicit issuer of Create: a stored chain and the key
// handle of its private key (from keyd).
type Issuer struct {
	CertID           string `json:"certId"`
	PrivateKeyHandle string `json:"privateKeyHandle"`
}

type pemBody struct {
	PEM string `json:"pem"`
}

// Create issues and stores certificate id for csrPEM (a PEM CERTIFICATE
// REQUEST), signed by issuer when set, else as [cert_issuance.<id>] says,
// and returns the PEM chain.
func (c *Client) Create(ctx context.Context, id, csrPEM string, issuer *Issuer) (string, error) {
	req := struct {
		CertID string  `json:"certId"`
		CSR    string  `json:"csr"`
		Issuer *Issuer `json:"issuer,omitempty"`
	}{id, csrPEM, issuer}
	var out pemBody
	err := c.c.Do(ctx, http.MethodPost, "/certificates", req, &out)
	return out.PEM, err
}

// Import stores pem (as given) under id.
func (c *Client) Import(ctx context.Context, id, pem string) error {
	return c.c.Do(ctx, http.MethodPut, "/certificates/"+url.PathEscape(id), pemBody{PEM: pem}, nil)
}

// Get returns the PEM of certificate id.
func (c *Client) Get(ctx context.Context, id string) (string, error) {
	var out pemBody
	err := c.c.Do(ctx, http.MethodGet, "/certificates/"+url.PathEscape(id), nil, &out)
	return out.PEM, err
}

// Delete deletes certificate id; a missing one is not an error.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.c.Do(ctx, http.MethodDelete, "/certificates/"+url.PathEscape(id), nil, nil)
}
