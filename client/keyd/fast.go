package keyd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// The signing and encryption calls are hot: their bodies are built and
// their answers read without reflection.

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendBytes appends b64 as a base64 JSON string.
func appendBytes(b, data []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, '"')
}

// postBytes POSTs body to path and returns the base64-decoded member name
// of the answer {"<name>":"<base64>"}.
func (c *Client) postBytes(ctx context.Context, path string, body []byte, name string) ([]byte, error) {
	raw, err := c.post(ctx, path, body)
	if err != nil {
		return nil, err
	}
	v, ok := singleField(raw, name)
	if !ok {
		var m map[string]string
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("decode response: %w", err)
		}
		v = []byte(m[name])
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
	n, err := base64.StdEncoding.Decode(out, v)
	if err != nil {
		return nil, fmt.Errorf("decode response: %s: %w", name, err)
	}
	return out[:n], nil
}

// singleField reads {"<name>":"<value>"} written without spaces or escapes.
func singleField(raw []byte, name string) ([]byte, bool) {
	prefix := len(name) + 5 // {"name":"
	if len(raw) < prefix+2 || raw[0] != '{' || raw[1] != '"' || string(raw[2:2+len(name)]) != name ||
		string(raw[2+len(name):prefix]) != `":"` || string(raw[len(raw)-2:]) != `"}` {
		return nil, false
	}
	v := raw[prefix : len(raw)-2]
	for _, c := range v {
		if c == '"' || c == '\\' {
			return nil, false
		}
	}
	return v, true
}

// signBody is K11's request.
func signBody(handle, algorithm string, data []byte) []byte {
	field := `"message":`
	if algorithm == ECDSA {
		field = `"digest":`
	}
	b := make([]byte, 0, len(handle)+len(algorithm)+base64.StdEncoding.EncodedLen(len(data))+64)
	b = append(b, `{"keyHandle":`...)
	b = appendString(b, handle)
	b = append(b, `,"algorithm":`...)
	b = appendString(b, algorithm)
	b = append(b, `,"parameters":{`...)
	b = append(b, field...)
	b = appendBytes(b, data)
	return append(b, "}}"...)
}

// cryptBody is K12's (dataField "plaintext") or K13's ("ciphertext") request.
func cryptBody(handle string, m Mechanism, dataField string, data []byte) []byte {
	b := make([]byte, 0, len(handle)+base64.StdEncoding.EncodedLen(len(data)+len(m.IV)+len(m.AAD))+96)
	b = append(b, `{"keyHandle":`...)
	b = appendString(b, handle)
	b = append(b, `,"algorithm":`...)
	b = appendString(b, m.Algorithm)
	if m.Algorithm == AEAD {
		b = append(b, `,"parameters":{"iv":`...)
		b = appendBytes(b, m.IV)
		b = append(b, `,"aad":`...)
		b = appendBytes(b, m.AAD)
		b = append(b, '}')
	}
	b = append(b, `,"`...)
	b = append(b, dataField...)
	b = append(b, `":`...)
	b = appendBytes(b, data)
	return append(b, '}')
}
