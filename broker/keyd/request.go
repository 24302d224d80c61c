package keyd

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/hsm"
)

// The request bodies of keyd, decoded as aziot's serde types are: unknown
// members are ignored, a missing or mistyped member is a 422 whose message
// is worded as serde's ("missing field `keyId`"). Decoding never fails
// inside encoding/json for a member's value: each field records what it
// saw and check turns that into the 422, so that the wording is ours and
// not the JSON package's.

// fieldState is what a member of the body held.
type fieldState uint8

const (
	absent fieldState = iota
	null
	present
	wrongType
	badValue
)

// str is a JSON string member.
type str struct {
	s     string
	state fieldState
}

// UnmarshalJSON records the string, or that the value was not one.
func (f *str) UnmarshalJSON(b []byte) error {
	// Fast path: encoding/json has already checked the token, so a string
	// of valid UTF-8 needs only its escapes undone (clients' JSON encoders
	// escape the "&" of every handle as \u0026).
	if n := len(b); n >= 2 && b[0] == '"' && b[n-1] == '"' {
		if s, ok := unquote(b[1 : n-1]); ok {
			f.s, f.state = s, present
			return nil
		}
	}
	switch {
	case string(b) == "null":
		f.state = null
	case json.Unmarshal(b, &f.s) == nil:
		f.state = present
	default:
		f.state = wrongType
	}
	return nil
}

// unquote undoes the escapes of the content of a JSON string that
// encoding/json has validated. ok is false for what it leaves to
// encoding/json: invalid UTF-8 and \u escapes outside the ASCII range.
func unquote(raw []byte) (string, bool) {
	i := bytes.IndexByte(raw, '\\')
	if i < 0 {
		return string(raw), utf8.Valid(raw)
	}
	out := make([]byte, i, len(raw))
	copy(out, raw[:i])
	for ; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(raw) {
			return "", false
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				return "", false
			}
			v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
			if err != nil || v >= 0x80 {
				return "", false
			}
			out = append(out, byte(v))
			i += 4
		default:
			return "", false
		}
	}
	if !utf8.Valid(out) {
		return "", false
	}
	return string(out), true
}

// bytesField is a base64 (standard, padded) JSON string member.
type bytesField struct {
	b     []byte
	state fieldState
}

// UnmarshalJSON decodes the base64 string, or records why it could not.
func (f *bytesField) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		f.state = null
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		f.state = wrongType
		return nil
	}
	raw := b[1 : len(b)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		// An escaped string: let encoding/json unescape it first.
		var s string
		if json.Unmarshal(b, &s) != nil {
			f.state = wrongType
			return nil
		}
		raw = []byte(s)
	}
	f.b = make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(f.b, raw)
	if err != nil {
		f.state, f.b = badValue, nil
		return nil
	}
	f.b, f.state = f.b[:n], present
	return nil
}

// check returns the 422 for a required member name, or nil.
func (f fieldState) check(name, expected string) error {
	switch f {
	case present:
		return nil
	case absent:
		return unprocessable("missing field `%s`", name)
	case null:
		return unprocessable("invalid type: null, expected %s (field `%s`)", expected, name)
	case badValue:
		return unprocessable("invalid value for field `%s`: expected %s", name, expected)
	}
	return unprocessable("invalid type for field `%s`: expected %s", name, expected)
}

// checkOptional is check for a member that may be absent or null.
func (f fieldState) checkOptional(name, expected string) error {
	if f == absent || f == null {
		return nil
	}
	return f.check(name, expected)
}

const (
	expString = "a string"
	expBase64 = "a base64-encoded string"
)

func unprocessable(format string, args ...any) *api.Error {
	return &api.Error{Status: http.StatusUnprocessableEntity, Message: fmt.Sprintf(format, args...)}
}

// createKeyRequest is K1's body.
type createKeyRequest struct {
	KeyID    str        `json:"keyId"`
	Usage    str        `json:"usage"`
	KeyBytes bytesField `json:"keyBytes"`
	usage    hsm.Usage
}

func (r *createKeyRequest) check() error {
	if err := r.KeyID.state.check("keyId", expString); err != nil {
		return err
	}
	if err := r.Usage.state.check("usage", "KeyUsage"); err != nil {
		return err
	}
	u, err := hsm.ParseUsage(r.Usage.s)
	if err != nil {
		bad := r.Usage.s
		for _, part := range strings.Split(r.Usage.s, ",") {
			if _, e := hsm.ParseUsage(part); e != nil {
				bad = part
				break
			}
		}
		return unprocessable("invalid value: string %q, expected KeyUsage", bad)
	}
	r.usage = u
	return r.KeyBytes.state.checkOptional("keyBytes", expBase64)
}

// createKeyPairRequest is K4's body.
type createKeyPairRequest struct {
	KeyID               str `json:"keyId"`
	PreferredAlgorithms str `json:"preferredAlgorithms"`
}

func (r *createKeyPairRequest) check() error {
	if err := r.KeyID.state.check("keyId", expString); err != nil {
		return err
	}
	return r.PreferredAlgorithms.state.checkOptional("preferredAlgorithms", expString)
}

// moveRequest is K6's body (and the body of any POST /key/{id}).
type moveRequest struct {
	From str `json:"from"`
}

func (r *moveRequest) check() error { return r.From.state.check("from", expString) }

// handleRequest is the body of K3, K7, K8 and K10.
type handleRequest struct {
	KeyHandle str `json:"keyHandle"`
}

func (r *handleRequest) check() error { return r.KeyHandle.state.check("keyHandle", expString) }

// deriveRequest is K9's body.
type deriveRequest struct {
	BaseKeyHandle  str        `json:"baseKeyHandle"`
	DerivationData bytesField `json:"derivationData"`
}

func (r *deriveRequest) check() error {
	if err := r.BaseKeyHandle.state.check("baseKeyHandle", expString); err != nil {
		return err
	}
	return r.DerivationData.state.check("derivationData", expBase64)
}

// Sign mechanisms (K11) and encrypt mechanisms (K12, K13) as on the wire.
const (
	mechECDSA        = "ECDSA"
	mechHMACSHA256   = "HMAC-SHA256"
	mechAEAD         = "AEAD"
	mechRSAPKCS1     = "RSA-PKCS1"
	mechRSANoPadding = "RSA-NO-PADDING"
)

// signRequest is K11's body: the algorithm/parameters pair is an
// adjacently tagged enum flattened into the object.
type signRequest struct {
	KeyHandle  str         `json:"keyHandle"`
	Algorithm  str         `json:"algorithm"`
	Parameters *signParams `json:"parameters"`
	data       []byte
}

// signParams holds the members of both variants' parameters.
type signParams struct {
	Digest  bytesField `json:"digest"`
	Message bytesField `json:"message"`
}

func (r *signRequest) check() error {
	if err := r.KeyHandle.state.check("keyHandle", expString); err != nil {
		return err
	}
	if err := r.Algorithm.state.check("algorithm", "variant identifier"); err != nil {
		return err
	}
	if r.Algorithm.s != mechECDSA && r.Algorithm.s != mechHMACSHA256 {
		return unknownVariant(r.Algorithm.s, mechECDSA, mechHMACSHA256)
	}
	if r.Parameters == nil {
		return unprocessable("missing field `parameters`")
	}
	f, name := r.Parameters.Message, "message"
	if r.Algorithm.s == mechECDSA {
		f, name = r.Parameters.Digest, "digest"
	}
	if err := f.state.check(name, expBase64); err != nil {
		return err
	}
	r.data = f.b
	return nil
}

// cryptRequest is K12's and K13's body; data is the plaintext or ciphertext.
type cryptRequest struct {
	KeyHandle  str             `json:"keyHandle"`
	Algorithm  str             `json:"algorithm"`
	Parameters json.RawMessage `json:"parameters"`
	Plaintext  bytesField      `json:"plaintext"`
	Ciphertext bytesField      `json:"ciphertext"`
	iv, aad    []byte
}

// check validates the body of /encrypt (dataField "plaintext") or /decrypt
// ("ciphertext").
func (r *cryptRequest) check(dataField string) error {
	if err := r.KeyHandle.state.check("keyHandle", expString); err != nil {
		return err
	}
	if err := r.Algorithm.state.check("algorithm", "variant identifier"); err != nil {
		return err
	}
	switch r.Algorithm.s {
	case mechAEAD:
		if len(r.Parameters) == 0 {
			return unprocessable("missing field `parameters`")
		}
		var p struct{ IV, AAD bytesField }
		if err := eachMember(r.Parameters, func(k, v []byte) {
			switch {
			case keyIs(k, "iv"):
				p.IV.UnmarshalJSON(v)
			case keyIs(k, "aad"):
				p.AAD.UnmarshalJSON(v)
			}
		}); err != nil {
			return unprocessable("invalid type for field `parameters`: expected struct variant Parameters::Aead")
		}
		if err := p.IV.state.check("iv", expBase64); err != nil {
			return err
		}
		if err := p.AAD.state.check("aad", expBase64); err != nil {
			return err
		}
		r.iv, r.aad = p.IV.b, p.AAD.b
	case mechRSAPKCS1, mechRSANoPadding:
		// A unit variant: "parameters" absent or null.
		if len(r.Parameters) != 0 && string(r.Parameters) != "null" {
			return unprocessable("invalid type for field `parameters`: expected unit variant %s", r.Algorithm.s)
		}
	default:
		return unknownVariant(r.Algorithm.s, mechAEAD, mechRSAPKCS1, mechRSANoPadding)
	}
	if dataField == "plaintext" {
		return r.Plaintext.state.check("plaintext", expBase64)
	}
	return r.Ciphertext.state.check("ciphertext", expBase64)
}

// data is the plaintext (encrypt) or ciphertext (decrypt).
func (r *cryptRequest) data(dataField string) []byte {
	if dataField == "plaintext" {
		return r.Plaintext.b
	}
	return r.Ciphertext.b
}

func unknownVariant(got string, want ...string) error {
	return unprocessable("unknown variant `%s`, expected one of `%s`", got, strings.Join(want, "`, `"))
}
