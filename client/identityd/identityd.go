// Package identityd is a client of the aziot Identity Service API
// (identityd.sock) for host processes and agents: the caller's identity,
// the device identity, module identities, reprovisioning, and SAS tokens
// minted through keyd with an identity's key handle (the key never leaves
// wardend).
package identityd

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/warden-iot/warden/client"
	"github.com/warden-iot/warden/client/keyd"
	"github.com/warden-iot/warden/identity"
)

// APIVersion is the api-version the client sends (I4 needs 2021-12-01 or later).
const APIVersion = "2022-08-01"

// Client calls identityd over its Unix socket. It is safe for concurrent use.
type Client struct{ c *client.Client }

// New returns a client of the identityd socket at path.
func New(path string) *Client { return &Client{c: client.New(path, APIVersion)} }

// WithToken returns a copy of c that sends a capability token.
func (c *Client) WithToken(token string) *Client { return &Client{c: c.c.WithToken(token)} }

// Close releases idle connections.
func (c *Client) Close() { c.c.Close() }

// Identity is aziot's identity JSON: Type "aziot" with Spec.
type Identity struct {
	Type string `json:"type"`
	Spec Spec   `json:"spec"`
}

// Spec is an IoT Hub identity.
type Spec struct {
	HubName     string `json:"hubName"`
	GatewayHost string `json:"gatewayHost"`
	DeviceID    string `json:"deviceId"`
	ModuleID    string `json:"moduleId,omitempty"`
	GenID       string `json:"genId,omitempty"`
	Auth        *Auth  `json:"auth,omitempty"`
}

// Auth is an identity's credential: "sas" (KeyHandle), "x509" (KeyHandle,
// CertID) or "tpm".
type Auth struct {
	Type      string `json:"type"`
	KeyHandle string `json:"keyHandle,omitempty"`
	CertID    string `json:"certId,omitempty"`
}

// Provisioning is I4's answer.
type Provisioning struct {
	Source         string          `json:"source"`
	Auth           string          `json:"auth,omitempty"`
	Endpoint       string          `json:"endpoint,omitempty"`
	ScopeID        string          `json:"scope_id,omitempty"`
	RegistrationID string          `json:"registration_id,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

// Identity is I1: the device for callers allowed it, else the host
// process's own module.
func (c *Client) Identity(ctx context.Context) (*Identity, error) {
	var out Identity
	return &out, c.c.Do(ctx, http.MethodGet, "/identities/identity", nil, &out)
}

// Device is I2.
func (c *Client) Device(ctx context.Context) (*Identity, error) {
	var out Identity
	return &out, c.c.Do(ctx, http.MethodPost, "/identities/device", map[string]string{"type": "aziot"}, &out)
}

// Reprovision is I3.
func (c *Client) Reprovision(ctx context.Context) error {
	return c.c.Do(ctx, http.MethodPost, "/identities/device/reprovision", map[string]string{"type": "aziot"}, nil)
}

// Provisioning is I4.
func (c *Client) Provisioning(ctx context.Context) (*Provisioning, error) {
	var out Provisioning
	return &out, c.c.Do(ctx, http.MethodGet, "/identities/provisioning", nil, &out)
}

// Modules is I5 (no credentials in the answer).
func (c *Client) Modules(ctx context.Context) ([]Identity, error) {
	var out struct {
		Identities []Identity `json:"identities"`
	}
	return out.Identities, c.c.Do(ctx, http.MethodGet, "/identities/modules?type=aziot", nil, &out)
}

// CreateModule is I6.
func (c *Client) CreateModule(ctx context.Context, id string) (*Identity, error) {
	var out Identity
	return &out, c.c.Do(ctx, http.MethodPost, "/identities/modules", map[string]string{"type": "aziot", "moduleId": id}, &out)
}

func modulePath(id string) string { return "/identities/modules/" + url.PathEscape(id) + "?type=aziot" }

// Module is I7.
func (c *Client) Module(ctx context.Context, id string) (*Identity, error) {
	var out Identity
	return &out, c.c.Do(ctx, http.MethodGet, modulePath(id), nil, &out)
}

// UpdateModule is I8: new keys for the module's generation.
func (c *Client) UpdateModule(ctx context.Context, id string) (*Identity, error) {
	var out Identity
	return &out, c.c.Do(ctx, http.MethodPut, modulePath(id), map[string]string{"type": "aziot"}, &out)
}

// DeleteModule is I9.
func (c *Client) DeleteModule(ctx context.Context, id string) error {
	return c.c.Do(ctx, http.MethodDelete, modulePath(id), nil, nil)
}

// SASToken mints an IoT Hub SAS token for a "sas" identity, valid for ttl:
// keyd signs "<sr>\n<expiry>" with HMAC-SHA256 on the identity's key handle
// (aziot-api.md §8.2; audience <hub>/devices/<device>[/modules/<module>]).
func SASToken(ctx context.Context, k *keyd.Client, id *Identity, ttl time.Duration) (string, error) {
	if id.Spec.Auth == nil || id.Spec.Auth.Type != "sas" || id.Spec.Auth.KeyHandle == "" {
		return "", errors.New("identityd: SAS token: the identity has no SAS key handle")
	}
	aud := id.Spec.HubName + "/devices/" + id.Spec.DeviceID
	if id.Spec.ModuleID != "" {
		aud += "/modules/" + id.Spec.ModuleID
	}
	sr := identity.EncodeSR(aud)
	se := time.Now().Add(ttl).Unix()
	sig, err := k.Sign(ctx, id.Spec.Auth.KeyHandle, "HMAC-SHA256", identity.StringToSign(sr, se))
	if err != nil {
		return "", err
	}
	return identity.Token(sr, sig, se, ""), nil
}
