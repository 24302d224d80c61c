// Package client calls Warden's and aziot's HTTP-over-Unix-socket APIs: the
// transport, api-version and error conventions that every socket shares.
package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to one socket.
type Client struct {
	socket  string
	version string // the api-version, query-escaped
	token   string
	pool    *pool // shared with the copies WithToken makes
}

// New returns a client for the socket at path, sending apiVersion on every
// request. Connections are kept alive and reused.
func New(path, apiVersion string) *Client {
	return &Client{socket: path, version: url.QueryEscape(apiVersion), pool: &pool{path: path}}
}

// WithToken returns a copy of c that sends token as "Authorization: Bearer".
// The copy shares c's connections.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.token = token
	return &cc
}

// Close releases idle connections.
func (c *Client) Close() { c.pool.closeIdle() }

// Error is a non-2xx answer: the status and the server's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Do sends method path (path may carry a query) with in as the JSON body
// (none when nil; a json.RawMessage is sent as it is) and decodes a 2xx
// JSON answer into out (when non-nil; a *json.RawMessage receives the raw
// body).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	switch v := in.(type) {
	case nil:
	case json.RawMessage:
		body = v
	default:
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = b
	}
	b, err := c.Raw(ctx, method, path, body)
	if err != nil {
		return err
	}
	if out != nil && len(b) > 0 {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = b
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

// Raw sends method path with body (JSON, sent as it is; nil for none) and
// returns the body of a 2xx answer. Any other answer is an *Error.
func (c *Client) Raw(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	resp, err := c.pool.roundTrip(ctx, &request{method: method, path: path, version: c.version, token: c.token, body: body})
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, c.socket, err)
	}
	if resp.status < 200 || resp.status > 299 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(resp.body, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(resp.body))
		}
		return nil, &Error{Status: resp.status, Message: e.Message}
	}
	return resp.body, nil
}
